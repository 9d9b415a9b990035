// Fast decoding and fused matrix-vector products for a quantized_matrix.
//
//   svq::matrix_decoder dec(q);         // tables built once per (N, K), cached here
//   dec.dequantize(out);                // == q.dequantize(out), bit for bit
//   dec.gemv(x, y);                     // y = Wq x without materialising Wq
//   dec.gemv_batch(x, y, 16);           // Y = Wq X for 16 vectors, one decode per group
//
// Decoding a group: its index goes through the table-driven split-order
// unrank (kernels/split_index.hpp), the pulses are scaled by
// s * level / ||y|| through detail::group_factor, as pvq_row_coder::decode_row
// does (double factor, then float(y_i) * float(factor)), so dequantize matches
// quantized_matrix::dequantize bit for bit.
//
// gemv: the stored rows are w' = w R^T (rotate/hadamard_rotation.hpp), so
// w . x = w' . (R x): x is rotated forward once, and every row is a sum over
// groups of factor_j * <y_j, (R x)_j> with integer pulses y_j; nothing is
// inverse-rotated. Rows are independent; `threads` splits them (0: all cores).
#pragma once

#include <svq/core/bitstream.hpp>
#include <svq/core/parallel.hpp>
#include <svq/error.hpp>
#include <svq/kernels/split_index.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/pvq/codec.hpp>
#include <svq/simd/compat.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

namespace svq {

namespace detail {

// sum_i float(y_i) * x_i, y: n ints, x: n floats (lane-wise partial sums, then
// a fixed-order reduction: deterministic, not the scalar order).
template <class Arch>
float pulse_dot_kernel(Arch, const int* y, const float* x, std::size_t n) noexcept {
    using ib = xsimd::batch<std::int32_t, Arch>;
    using fb = xsimd::batch<float, Arch>;
    constexpr std::size_t lanes = fb::size;
    fb acc(0.0f);
    std::size_t i = 0;
    for (; i + lanes <= n; i += lanes) acc = xsimd::fma(simd::to_float(ib::load_unaligned(y + i)), fb::load_unaligned(x + i), acc);
    float s = simd::reduce_add(acc);
    for (; i < n; ++i) s += static_cast<float>(y[i]) * x[i];
    return s;
}

inline float pulse_dot(const int* y, const float* x, std::size_t n) noexcept {
    if constexpr (simd::default_arch::supported()) {
        return pulse_dot_kernel(simd::default_arch{}, y, x, n);
    } else {
        float s = 0.0f;
        for (std::size_t i = 0; i < n; ++i) s += static_cast<float>(y[i]) * x[i];
        return s;
    }
}

}  // namespace detail

class matrix_decoder {
public:
    // Builds the unrank tables of the full and the tail group, the gain levels
    // and the rotation of q. q must outlive the decoder.
    explicit matrix_decoder(const quantized_matrix& q)
        : q_(&q),
          l_(q.layout()),
          scales_{q.layout().row_scale_bits, q.reference_scale()},
          full_(l_.group_dim, l_.pulses),
          gain_levels_(levels_of(l_.group_dim)) {
        if (l_.tail_dim != 0) {
            tail_.emplace(l_.tail_dim, l_.tail_pulses);
            tail_levels_ = levels_of(l_.tail_dim);
        }
        if (q.config().rotate) rotation_.emplace(l_.cols, q.config().seed);
    }

    std::size_t rows() const noexcept { return l_.rows; }
    std::size_t cols() const noexcept { return l_.cols; }
    const pvq_split_index& full_index() const noexcept { return full_; }

    // Row r before the inverse rotation (cols floats). Throws svq::corrupt_data
    // for an index >= V(N, K) or a bad row scale code.
    void decode_row_rotated(std::size_t r, float* out) const {
        row_scratch sc = make_scratch();
        decode_row_impl(r, out, sc, [](std::size_t, const int*, std::size_t, float) {});
    }

    // All rows, row-major (rows * cols floats), bit-identical to quantized_matrix::dequantize.
    void dequantize(std::span<float> out, unsigned threads = 1) const {
        if (out.size() != rows() * cols())
            throw invalid_argument(fmt::format("matrix_decoder::dequantize: output has {} entries, the matrix {} x {}",
                                               out.size(), rows(), cols()));
        std::exception_ptr error;
        std::mutex error_mutex;
        detail::parallel_slices(rows(), threads, [&](std::size_t first, std::size_t end) {
            try {
                row_scratch sc = make_scratch();
                std::vector<float> scratch(rotation_ ? rotation_->scratch_size() : 0);
                for (std::size_t r = first; r < end; ++r) {
                    float* row = out.data() + r * cols();
                    decode_row_impl(r, row, sc, [](std::size_t, const int*, std::size_t, float) {});
                    if (rotation_) rotation_->inverse(std::span<float>(row, cols()), scratch);
                }
            } catch (...) {
                const std::lock_guard<std::mutex> lock(error_mutex);
                if (!error) error = std::current_exception();
            }
        });
        if (error) std::rethrow_exception(error);
    }

    // y = Wq x. x: cols floats, y: rows floats.
    void gemv(std::span<const float> x, std::span<float> y, unsigned threads = 1) const {
        gemv_batch(x, y, 1, threads);
    }

    // Y = Wq X for `batch` vectors: x: batch * cols floats (vector c at c * cols),
    // y: batch * rows floats (vector c at c * rows). Each group is decoded once.
    void gemv_batch(std::span<const float> x, std::span<float> y, std::size_t batch, unsigned threads = 1) const {
        if (batch == 0) throw invalid_argument("matrix_decoder::gemv_batch: batch must be >= 1");
        if (x.size() != batch * cols())
            throw invalid_argument(fmt::format("matrix_decoder::gemv: x has {} entries, need {} ({} x {} columns)",
                                               x.size(), batch * cols(), batch, cols()));
        if (y.size() != batch * rows())
            throw invalid_argument(fmt::format("matrix_decoder::gemv: y has {} entries, need {} ({} x {} rows)",
                                               y.size(), batch * rows(), batch, rows()));
        std::vector<float> xr(x.begin(), x.end());
        if (rotation_) {
            std::vector<float> scratch(rotation_->scratch_size());
            for (std::size_t c = 0; c < batch; ++c) rotation_->forward(std::span<float>(xr.data() + c * cols(), cols()), scratch);
        }
        std::exception_ptr error;
        std::mutex error_mutex;
        detail::parallel_slices(rows(), threads, [&](std::size_t first, std::size_t end) {
            try {
                row_scratch sc = make_scratch();
                std::vector<float> acc(batch);
                for (std::size_t r = first; r < end; ++r) {
                    std::fill(acc.begin(), acc.end(), 0.0f);
                    decode_row_impl(r, nullptr, sc,
                                    [&](std::size_t first_col, const int* p, std::size_t dim, float factor) {
                                        for (std::size_t c = 0; c < batch; ++c)
                                            acc[c] += factor * detail::pulse_dot(p, xr.data() + c * cols() + first_col, dim);
                                    });
                    for (std::size_t c = 0; c < batch; ++c) y[c * rows() + r] = acc[c];
                }
            } catch (...) {
                const std::lock_guard<std::mutex> lock(error_mutex);
                if (!error) error = std::current_exception();
            }
        });
        if (error) std::rethrow_exception(error);
    }

private:
    std::vector<double> levels_of(std::size_t dim) const {
        const scalar_quantizer g = detail::matrix_gain_quantizer(dim, l_.cols, l_.gain_bits);
        return {g.levels().begin(), g.levels().end()};
    }

    // Per-thread buffers of decode_row_impl.
    struct row_scratch {
        std::vector<std::uint64_t> index;  // the row's full-group indices, limbs() words each
        std::vector<int> y;                // the row's pulses, group_dim ints per group
        std::vector<std::uint32_t> codes;  // the row's gain codes
        pvq_split_index::unrank_workspace ws;
    };
    row_scratch make_scratch() const {
        row_scratch s;
        s.index.resize(l_.full_groups * full_.limbs());
        s.y.resize(l_.groups_per_row() * l_.group_dim);
        s.codes.resize(l_.groups_per_row());
        return s;
    }

    // Decodes row r: reads every group's index and gain code, unranks the full
    // groups together (pvq_split_index::unrank_batch), then per group writes
    // the scaled floats to out (when not null) and calls
    // on_group(first column, pulses, dim, factor).
    template <class OnGroup>
    void decode_row_impl(std::size_t r, float* out, row_scratch& sc, OnGroup&& on_group) const {
        const bit_reader in(q_->words());
        std::size_t offset = l_.row_bit_offset(r);
        const double s = scales_.decode(static_cast<std::uint32_t>(in.read(offset, l_.row_scale_bits)));
        offset += l_.row_scale_bits;
        const std::size_t groups = l_.groups_per_row();
        std::uint32_t* codes = sc.codes.data();
        std::array<std::uint64_t, detail::max_split_limbs> tail_index{};
        for (std::size_t j = 0; j < groups; ++j) {
            const bool full = j < l_.full_groups;
            const pvq_split_index& ix = full ? full_ : *tail_;
            const std::size_t dim = full ? l_.group_dim : l_.tail_dim, bits = full ? l_.index_bits : l_.tail_index_bits;
            const std::size_t w = ix.limbs();
            std::uint64_t* index = full ? sc.index.data() + j * w : tail_index.data();
            for (std::size_t t = 0; t < w; ++t) {
                const std::size_t done = 64 * t;
                index[t] = done < bits ? in.read(offset + done, std::min<std::size_t>(64, bits - done)) : 0;
            }
            offset += bits;
            codes[j] = static_cast<std::uint32_t>(in.read(offset, l_.gain_bits));
            offset += l_.gain_bits;
            if (!ix.in_range(index))
                throw corrupt_data(fmt::format("matrix_decoder: row {} group {}: index is not below V(N={}, K={})", r,
                                               j, dim, ix.pulses()));
        }
        full_.unrank_batch(sc.index.data(), l_.full_groups, sc.y.data(), sc.ws);
        if (l_.tail_dim != 0) tail_->unrank(tail_index.data(), sc.y.data() + l_.full_groups * l_.group_dim);
        for (std::size_t j = 0; j < groups; ++j) {
            const bool full = j < l_.full_groups;
            const std::size_t dim = full ? l_.group_dim : l_.tail_dim;
            const int* y = sc.y.data() + j * l_.group_dim;
            const float factor = detail::group_factor(s, (full ? gain_levels_ : tail_levels_)[codes[j]], y, dim);
            if (out != nullptr) detail::scale_pulses(y, factor, out + j * l_.group_dim, dim);
            on_group(j * l_.group_dim, y, dim, factor);
        }
    }

    const quantized_matrix* q_;
    matrix_layout l_;
    detail::row_scale_codec scales_;
    pvq_split_index full_;
    std::optional<pvq_split_index> tail_;
    std::vector<double> gain_levels_, tail_levels_;
    std::optional<hadamard_rotation> rotation_;
};

}  // namespace svq
