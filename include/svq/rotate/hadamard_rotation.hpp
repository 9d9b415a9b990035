// Randomized Hadamard rotation for incoherence processing (QuIP#-style).
//
// Weights W (rows x dim, row-major, dim = input dimension) are rotated along
// the input dimension before quantization, W' = W R^T with R orthogonal, so
// that W' (R x) = W x; heavy-tailed rows become close to Gaussian, which is
// what the PVQ codebook and the scale quantizer are built for. Decoding
// undoes it exactly: W = W' R. A Hessian H = X^T X / n becomes R H R^T.
//
// Construction (docs/rotation.md has the derivation and measured cost):
//   dim = m * 2^k with 2^k the largest power-of-two divisor of dim,
//   R = (Q_m kron H_{2^k} / sqrt(2^k)) D,
// D a diagonal of random signs, H the Sylvester Hadamard matrix applied by
// the fast transform of fwht.hpp, Q_m a Haar-random orthogonal m x m matrix
// (m = 1: no Q). Applying R costs O(dim log dim + dim m). When the odd part
// m exceeds max_dense_factor the dense factor would cost too much; dim is then
// split into blocks whose odd parts are small (powers of two first), R is
// block-diagonal over that split, and a second layer with the blocks in
// reverse order and fresh signs mixes coordinates across the split.
//
// Everything is drawn from one 64-bit seed with the portable generators of
// seeded_random.hpp, so a stored seed reproduces R on any platform.
#pragma once

#include <svq/error.hpp>
#include <svq/rotate/fwht.hpp>
#include <svq/rotate/seeded_random.hpp>
#include <svq/simd/compat.hpp>

#include <svq/core/eigen.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>
#include <vector>

namespace svq {
namespace detail {

// out = Q in, with in and out viewed as m x p row-major matrices (m rows of
// p values each) and q as an m x m row-major matrix.
// q: m * m values; in, out: m * p values each, not overlapping.
template <class T>
inline void mix_rows_scalar(const T* q, std::size_t m, std::size_t p, const T* in, T* out) noexcept {
    for (std::size_t i = 0; i < m; ++i) {
        T* out_row = out + i * p;
        for (std::size_t j = 0; j < p; ++j) out_row[j] = T(0);
        for (std::size_t k = 0; k < m; ++k) {
            const T weight = q[i * m + k];
            const T* in_row = in + k * p;
            for (std::size_t j = 0; j < p; ++j) out_row[j] += weight * in_row[j];
        }
    }
}

// SIMD body of mix_rows_scalar for p a multiple of the batch width: each
// batch of columns is accumulated for four output rows at once, so one load
// of `in` feeds four multiply-adds. Accumulation runs over k in ascending
// order as in the scalar body; results may differ from it in the last bit
// where the compiler does not contract the scalar multiply-add, which is
// harmless here (no bit-exactness contract on the dense factor).
template <class Arch, class T>
inline void mix_rows_kernel(Arch, const T* q, std::size_t m, std::size_t p, const T* in, T* out) noexcept {
    using batch = xsimd::batch<T, Arch>;
    constexpr std::size_t lanes = batch::size;
    if (p % lanes != 0) {
        mix_rows_scalar(q, m, p, in, out);
        return;
    }
    std::size_t i = 0;
    for (; i + 4 <= m; i += 4) {
        const T* q0 = q + i * m;
        const T* q1 = q0 + m;
        const T* q2 = q1 + m;
        const T* q3 = q2 + m;
        for (std::size_t j = 0; j < p; j += lanes) {
            batch acc0(T(0)), acc1(T(0)), acc2(T(0)), acc3(T(0));
            for (std::size_t k = 0; k < m; ++k) {
                const batch column = batch::load_unaligned(in + k * p + j);
                acc0 = xsimd::fma(batch(q0[k]), column, acc0);
                acc1 = xsimd::fma(batch(q1[k]), column, acc1);
                acc2 = xsimd::fma(batch(q2[k]), column, acc2);
                acc3 = xsimd::fma(batch(q3[k]), column, acc3);
            }
            acc0.store_unaligned(out + i * p + j);
            acc1.store_unaligned(out + (i + 1) * p + j);
            acc2.store_unaligned(out + (i + 2) * p + j);
            acc3.store_unaligned(out + (i + 3) * p + j);
        }
    }
    for (; i < m; ++i) {
        const T* qi = q + i * m;
        for (std::size_t j = 0; j < p; j += lanes) {
            batch acc(T(0));
            for (std::size_t k = 0; k < m; ++k) acc = xsimd::fma(batch(qi[k]), batch::load_unaligned(in + k * p + j), acc);
            acc.store_unaligned(out + i * p + j);
        }
    }
}

template <class T>
inline void mix_rows(const T* q, std::size_t m, std::size_t p, const T* in, T* out) noexcept {
    if constexpr (simd::has_simd) {
        mix_rows_kernel(simd::default_arch{}, q, m, p, in, out);
    } else {
        mix_rows_scalar(q, m, p, in, out);
    }
}

// v[i] *= signs[i] (exact: the signs are +-1). v, signs: n values each.
template <class Arch, class T>
inline void multiply_signs_kernel(Arch, T* v, const T* signs, std::size_t n) noexcept {
    using batch = xsimd::batch<T, Arch>;
    constexpr std::size_t lanes = batch::size;
    std::size_t i = 0;
    for (; i + lanes <= n; i += lanes) {
        (batch::load_unaligned(v + i) * batch::load_unaligned(signs + i)).store_unaligned(v + i);
    }
    for (; i < n; ++i) v[i] *= signs[i];
}

template <class T>
inline void multiply_signs(T* v, const T* signs, std::size_t n) noexcept {
    if constexpr (simd::has_simd) {
        multiply_signs_kernel(simd::default_arch{}, v, signs, n);
    } else {
        for (std::size_t i = 0; i < n; ++i) v[i] *= signs[i];
    }
}

// In-place transpose of a square dim x dim row-major matrix, tile by tile so
// both the row and the column side stay in cache. h: dim * dim values.
template <class T>
inline void transpose_square(T* h, std::size_t dim) noexcept {
    constexpr std::size_t tile = 32;
    for (std::size_t i0 = 0; i0 < dim; i0 += tile) {
        const std::size_t i1 = std::min(dim, i0 + tile);
        for (std::size_t j0 = i0; j0 < dim; j0 += tile) {
            const std::size_t j1 = std::min(dim, j0 + tile);
            for (std::size_t i = i0; i < i1; ++i) {
                for (std::size_t j = std::max(j0, i + 1); j < j1; ++j) std::swap(h[i * dim + j], h[j * dim + i]);
            }
        }
    }
}

// Haar-random orthogonal m x m matrix, row-major: Q of the QR factorisation
// of a matrix of iid N(0, 1) entries (filled row by row from the sampler),
// with each column's sign fixed so that R has a positive diagonal, which
// makes the factorisation unique and the distribution Haar (Mezzadri, "How to
// generate random matrices from the classical compact groups", 2007).
inline std::vector<double> random_orthogonal(std::size_t m, std::uint64_t seed) {
    const auto size = static_cast<Eigen::Index>(m);
    Eigen::MatrixXd gaussian(size, size);
    normal_sampler normal(seed);
    for (Eigen::Index i = 0; i < size; ++i) {
        for (Eigen::Index j = 0; j < size; ++j) gaussian(i, j) = normal.next();
    }
    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(gaussian);
    Eigen::MatrixXd q = qr.householderQ();
    for (Eigen::Index j = 0; j < size; ++j) {
        if (qr.matrixQR()(j, j) < 0.0) q.col(j) *= -1.0;
    }
    std::vector<double> rows(m * m);
    for (Eigen::Index i = 0; i < size; ++i) {
        for (Eigen::Index j = 0; j < size; ++j) rows[static_cast<std::size_t>(i) * m + static_cast<std::size_t>(j)] = q(i, j);
    }
    return rows;
}

}  // namespace detail

class hadamard_rotation {
public:
    // Largest odd factor m handled by one dense m x m factor; beyond it the
    // two-layer block-diagonal construction takes over (see the file comment).
    static constexpr std::size_t max_dense_factor = 1024;

    // R for vectors of `dim` values (any dim >= 1), fully determined by (dim, seed).
    // Throws svq::invalid_argument for dim == 0.
    hadamard_rotation(std::size_t dim, std::uint64_t seed) : dim_(dim), seed_(seed) {
        if (dim == 0) throw invalid_argument("hadamard_rotation: dim must be >= 1, got 0");
        const std::vector<std::size_t> sizes = split(dim);
        std::uint64_t stream = 0;
        add_layer(sizes, stream);
        if (sizes.size() > 1) add_layer(std::vector<std::size_t>(sizes.rbegin(), sizes.rend()), stream);
        for (const layer& l : layers_) {
            for (const block& b : l.blocks) {
                if (b.dense > 1) scratch_size_ = std::max(scratch_size_, b.dense * b.hadamard);
            }
        }
    }

    std::size_t dim() const noexcept { return dim_; }
    std::uint64_t seed() const noexcept { return seed_; }

    // True when R is one randomized Walsh-Hadamard block, R v = H (D v) / sqrt(dim)
    // (dim a power of two): then R^T v = D (H v) / sqrt(dim), which the
    // integer-stage decoders (matrix/quantized_matrix.hpp) compute in parts.
    bool single_hadamard() const noexcept {
        return layers_.size() == 1 && layers_[0].blocks.size() == 1 && layers_[0].blocks[0].dense == 1;
    }
    // D of the first layer: dim values, each +1 or -1 (the only layer when single_hadamard()).
    std::span<const float> signs() const noexcept { return layers_[0].signs; }

    // Values of scratch the scratch-taking overloads need (0 when dim's odd part is 1).
    std::size_t scratch_size() const noexcept { return scratch_size_; }

    // v <- R v. v: dim values.
    void forward(std::span<float> v) const { apply_allocating<true>(v); }
    void forward(std::span<double> v) const { apply_allocating<true>(v); }
    // v <- R^T v (= R^-1 v). v: dim values.
    void inverse(std::span<float> v) const { apply_allocating<false>(v); }
    void inverse(std::span<double> v) const { apply_allocating<false>(v); }

    // Allocation-free forms for hot loops. v: dim values; scratch: at least scratch_size() values.
    void forward(std::span<float> v, std::span<float> scratch) const { apply_checked<true>(v, scratch); }
    void inverse(std::span<float> v, std::span<float> scratch) const { apply_checked<false>(v, scratch); }

    // Every row of a row-major rows x dim matrix: row <- R row (that is
    // m <- m R^T) or row <- R^T row (m <- m R). m: rows * dim floats.
    void forward_rows(std::span<float> m, std::size_t rows) const { apply_rows<true>(m, rows); }
    void inverse_rows(std::span<float> m, std::size_t rows) const { apply_rows<false>(m, rows); }

    // h <- R h R^T for a dim x dim row-major matrix (a Hessian X^T X / n).
    // h: dim * dim doubles. Symmetry is not required.
    void conjugate(std::span<double> h) const {
        check_rows_size("conjugate", h.size(), dim_);
        apply_rows<true>(h, dim_);  // h R^T: each row r becomes R r
        detail::transpose_square(h.data(), dim_);  // R h^T
        apply_rows<true>(h, dim_);  // R h^T R^T
        detail::transpose_square(h.data(), dim_);  // R h R^T
    }

private:
    // One diagonal block: coordinates [offset, offset + dense * hadamard),
    // viewed as a dense x hadamard row-major matrix V and mapped to Q V H / sqrt(hadamard).
    struct block {
        std::size_t offset = 0;
        std::size_t dense = 1;     // m: odd factor, size of Q (1: no Q)
        std::size_t hadamard = 1;  // 2^k: Walsh-Hadamard length
        std::vector<double> q, q_transposed;  // m x m row-major each; empty when dense == 1
        std::vector<float> q_float, q_transposed_float;
    };
    struct layer {
        std::vector<float> signs;  // D: dim values, each +1 or -1
        std::vector<double> signs_double;
        std::vector<block> blocks;  // disjoint, covering [0, dim)
    };

    // Block sizes covering dim: dim itself when its odd part is small enough,
    // otherwise the largest power of two that fits, then the rest the same way.
    static std::vector<std::size_t> split(std::size_t dim) {
        std::vector<std::size_t> sizes;
        std::size_t remaining = dim;
        while (remaining > 0) {
            const std::size_t odd = remaining >> std::countr_zero(remaining);
            if (odd <= max_dense_factor) {
                sizes.push_back(remaining);
                break;
            }
            const std::size_t power = std::bit_floor(remaining);
            sizes.push_back(power);
            remaining -= power;
        }
        return sizes;
    }

    // Streams of the seed are used in construction order: the layer's signs, then each dense factor.
    void add_layer(const std::vector<std::size_t>& sizes, std::uint64_t& stream) {
        layer l;
        l.signs.resize(dim_);
        l.signs_double.resize(dim_);
        detail::splitmix64 sign_bits(detail::derive_seed(seed_, stream++));
        std::uint64_t word = 0;
        for (std::size_t i = 0; i < dim_; ++i) {
            if (i % 64 == 0) word = sign_bits.next();
            const bool negative = (word >> (i % 64)) & 1U;
            l.signs[i] = negative ? -1.0F : 1.0F;
            l.signs_double[i] = negative ? -1.0 : 1.0;
        }
        std::size_t offset = 0;
        for (const std::size_t size : sizes) {
            block b;
            b.offset = offset;
            b.hadamard = std::size_t{1} << std::countr_zero(size);
            b.dense = size / b.hadamard;
            if (b.dense > 1) {
                b.q = detail::random_orthogonal(b.dense, detail::derive_seed(seed_, stream++));
                b.q_transposed.resize(b.q.size());
                for (std::size_t i = 0; i < b.dense; ++i) {
                    for (std::size_t j = 0; j < b.dense; ++j) b.q_transposed[j * b.dense + i] = b.q[i * b.dense + j];
                }
                b.q_float.assign(b.q.begin(), b.q.end());
                b.q_transposed_float.assign(b.q_transposed.begin(), b.q_transposed.end());
            }
            l.blocks.push_back(std::move(b));
            offset += size;
        }
        layers_.push_back(std::move(l));
    }

    template <class T>
    static const T* signs_of(const layer& l) noexcept {
        if constexpr (std::is_same_v<T, float>) return l.signs.data();
        else return l.signs_double.data();
    }
    template <class T>
    static const T* dense_of(const block& b, bool transposed) noexcept {
        if constexpr (std::is_same_v<T, float>) return transposed ? b.q_transposed_float.data() : b.q_float.data();
        else return transposed ? b.q_transposed.data() : b.q.data();
    }

    // v: dim values; scratch: scratch_size() values.
    template <bool Forward, class T>
    void apply(T* v, T* scratch) const noexcept {
        if constexpr (Forward) {
            for (const layer& l : layers_) {
                detail::multiply_signs(v, signs_of<T>(l), dim_);
                for (const block& b : l.blocks) {
                    T* segment = v + b.offset;
                    for (std::size_t r = 0; r < b.dense; ++r) detail::fwht_dispatch(segment + r * b.hadamard, b.hadamard);
                    if (b.dense > 1) {
                        detail::mix_rows(dense_of<T>(b, false), b.dense, b.hadamard, segment, scratch);
                        std::copy_n(scratch, b.dense * b.hadamard, segment);
                    }
                }
            }
        } else {
            // Each coordinate's last operation in a layer is its FWHT row, so
            // the layer's signs ride in that transform's last pass (the same
            // values as multiplying afterwards: the factors are +-1).
            for (auto l = layers_.rbegin(); l != layers_.rend(); ++l) {
                const T* signs = signs_of<T>(*l);
                for (const block& b : l->blocks) {
                    T* segment = v + b.offset;
                    if (b.dense > 1) {
                        detail::mix_rows(dense_of<T>(b, true), b.dense, b.hadamard, segment, scratch);
                        std::copy_n(scratch, b.dense * b.hadamard, segment);
                    }
                    for (std::size_t r = 0; r < b.dense; ++r)
                        detail::fwht_dispatch(segment + r * b.hadamard, b.hadamard, signs + b.offset + r * b.hadamard);
                }
            }
        }
    }

    void check_vector_size(const char* what, std::size_t size) const {
        if (size != dim_) {
            throw invalid_argument(fmt::format("hadamard_rotation::{}: vector has {} values, dim is {}", what, size, dim_));
        }
    }

    static void check_rows_size(const char* what, std::size_t size, std::size_t rows, std::size_t dim) {
        if (rows != 0 && dim > std::numeric_limits<std::size_t>::max() / rows) {
            throw invalid_argument(fmt::format("hadamard_rotation::{}: rows={} times dim={} overflows", what, rows, dim));
        }
        if (size != rows * dim) {
            throw invalid_argument(fmt::format("hadamard_rotation::{}: matrix has {} values, expected rows={} x dim={}",
                                               what, size, rows, dim));
        }
    }
    void check_rows_size(const char* what, std::size_t size, std::size_t rows) const {
        check_rows_size(what, size, rows, dim_);
    }

    template <bool Forward, class T>
    void apply_allocating(std::span<T> v) const {
        check_vector_size(Forward ? "forward" : "inverse", v.size());
        std::vector<T> scratch(scratch_size_);
        apply<Forward>(v.data(), scratch.data());
    }

    template <bool Forward, class T>
    void apply_checked(std::span<T> v, std::span<T> scratch) const {
        check_vector_size(Forward ? "forward" : "inverse", v.size());
        if (scratch.size() < scratch_size_) {
            throw invalid_argument(fmt::format("hadamard_rotation::{}: scratch has {} values, needs {}",
                                               Forward ? "forward" : "inverse", scratch.size(), scratch_size_));
        }
        apply<Forward>(v.data(), scratch.data());
    }

    template <bool Forward, class T>
    void apply_rows(std::span<T> m, std::size_t rows) const {
        check_rows_size(Forward ? "forward_rows" : "inverse_rows", m.size(), rows);
        std::vector<T> scratch(scratch_size_);
        for (std::size_t r = 0; r < rows; ++r) apply<Forward>(m.data() + r * dim_, scratch.data());
    }

    std::size_t dim_;
    std::uint64_t seed_;
    std::vector<layer> layers_;
    std::size_t scratch_size_ = 0;
};

}  // namespace svq
