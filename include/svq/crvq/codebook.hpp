// Vector codebooks for CRVQ (docs/crvq.md): the Codebook concept, a k-means
// codebook of 2^bits entries of dimension d stored in fp16, nearest-entry
// encoding with distances as matrix products, beam search over additive
// codebooks, and the closed-form least-squares refit of additive codebooks
// for fixed codes.
//
// Every error is a weighted one: vector v has one non-negative weight per
// coordinate, w_vk, and its error against the entry c is
//   D(v, c) = sum_k w_vk (x_vk - c_k)^2
//           = sum_k w_vk x_vk^2 - 2 sum_k (w_vk x_vk) c_k + sum_k w_vk c_k^2,
// so the distances of a block of vectors X (weights W) to all entries C are
// const - 2 (W o X) C^T + W (C o C)^T: two GEMMs (Eigen). CRVQ sets
// w_vk = s_r^2 H_jj (row scale squared times the Hessian diagonal of the input
// channel of that coordinate), which makes D the diagonal-Hessian proxy loss of
// that vector; unit weights give plain MSE. A weight of 0 marks a padding
// coordinate (a tail vector shorter than d): it never affects a choice or a fit.
#pragma once

#include <svq/concepts.hpp>
#include <svq/core/eigen.hpp>
#include <svq/core/half.hpp>
#include <svq/error.hpp>
#include <svq/rotate/seeded_random.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <utility>
#include <vector>

namespace svq {

// A finite set of d-dimensional vectors with a b-bit code per vector:
// dim(), entries() == 2^code_bits(), stored_bits() (the bits the codebook
// itself takes), encode(x) -> nearest entry, decode(code, out).
template <class C>
concept Codebook = detail::HasDim<C> &&
                   requires(const C& c, std::span<const float> x, std::span<float> out, std::uint32_t code) {
                       { c.entries() } -> std::convertible_to<std::size_t>;
                       { c.code_bits() } -> std::convertible_to<unsigned>;
                       { c.stored_bits() } -> std::convertible_to<std::size_t>;
                       { c.encode(x) } -> std::same_as<std::uint32_t>;
                       c.decode(code, out);
                   };

// n vectors of dimension d, one per row.
using vector_block = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct kmeans_options {
    unsigned iterations = 12;                 // Lloyd iterations after the k-means++ seeding
    std::uint64_t seed = 0x6372767131ULL;     // k-means++ draws
    std::size_t max_samples = std::size_t{1} << 16;  // fit on at most this many vectors (evenly spaced)
    // Entry 0 is the zero vector and stays so (a "no correction" code for
    // residual codebooks: coding with it is never worse than not coding).
    bool zero_entry = false;
};

namespace detail {

inline void check_block(const vector_block& x, const vector_block& w, std::size_t dim, const char* who) {
    if (static_cast<std::size_t>(x.cols()) != dim)
        throw invalid_argument(fmt::format("{}: vectors of dimension {}, the codebook has {}", who, x.cols(), dim));
    if (w.size() != 0 && (w.rows() != x.rows() || w.cols() != x.cols()))
        throw invalid_argument(fmt::format("{}: weights {} x {} for vectors {} x {}", who, w.rows(), w.cols(),
                                           x.rows(), x.cols()));
    for (Eigen::Index i = 0; i < x.size(); ++i)
        if (!std::isfinite(x.data()[i]))
            throw invalid_argument(fmt::format("{}: vector {} coordinate {} = {} is not finite", who,
                                               i / x.cols(), i % x.cols(), x.data()[i]));
    for (Eigen::Index i = 0; i < w.size(); ++i)
        if (!std::isfinite(w.data()[i]) || w.data()[i] < 0.0f)
            throw invalid_argument(fmt::format("{}: weight of vector {} coordinate {} = {} must be finite and >= 0",
                                               who, i / w.cols(), i % w.cols(), w.data()[i]));
}

inline float round_to_half(float v) noexcept { return half_to_float(float_to_half(v)); }

// Rows of a block that the fit uses: all, or max_samples evenly spaced.
inline std::vector<Eigen::Index> sample_rows(Eigen::Index n, std::size_t max_samples) {
    const auto m = static_cast<Eigen::Index>(std::min<std::size_t>(static_cast<std::size_t>(n), std::max<std::size_t>(max_samples, 1)));
    std::vector<Eigen::Index> rows(static_cast<std::size_t>(m));
    for (Eigen::Index i = 0; i < m; ++i) rows[static_cast<std::size_t>(i)] = i * n / m;
    return rows;
}

}  // namespace detail

class kmeans_codebook {
public:
    kmeans_codebook() = default;

    // From stored fp16 entries: values has 2^bits * dim halves, entry-major.
    // Throws svq::invalid_argument for dim == 0 or bits outside [1, 16],
    // svq::corrupt_data for a wrong count or a non-finite half.
    kmeans_codebook(std::size_t dim, unsigned bits, std::span<const std::uint16_t> values) {
        check_shape(dim, bits);
        const std::size_t k = std::size_t{1} << bits;
        if (values.size() != k * dim)
            throw corrupt_data(fmt::format("kmeans_codebook: {} stored values for {} entries of dimension {} (need {})",
                                           values.size(), k, dim, k * dim));
        dim_ = dim;
        bits_ = bits;
        entries_.resize(static_cast<Eigen::Index>(k), static_cast<Eigen::Index>(dim));
        for (std::size_t i = 0; i < values.size(); ++i) {
            const float v = half_to_float(values[i]);
            if (!std::isfinite(v))
                throw corrupt_data(fmt::format("kmeans_codebook: stored value {} ({:#06x}) is not finite", i, values[i]));
            entries_.data()[i] = v;
        }
    }

    // From float entries (2^bits x dim), rounded to fp16 (what is stored).
    kmeans_codebook(unsigned bits, const vector_block& entries) {
        check_shape(static_cast<std::size_t>(entries.cols()), bits);
        if (entries.rows() != (Eigen::Index{1} << bits))
            throw invalid_argument(fmt::format("kmeans_codebook: {} entries for {} bits (need {})", entries.rows(), bits,
                                               std::size_t{1} << bits));
        detail::check_block(entries, vector_block(), static_cast<std::size_t>(entries.cols()), "kmeans_codebook");
        dim_ = static_cast<std::size_t>(entries.cols());
        bits_ = bits;
        entries_ = entries.unaryExpr([](float v) { return detail::round_to_half(v); });
    }

    // k-means (weighted Lloyd, k-means++ seeding) on the rows of x (n x dim),
    // weights w (n x dim, >= 0; empty: all 1). Entries are rounded to fp16
    // after every update, so the fitted codebook is exactly the stored one.
    // With `init`, Lloyd starts from its entries instead of k-means++.
    // Throws svq::invalid_argument for a bad shape, a non-finite value, a
    // negative weight, no vectors, or bits outside [1, 16].
    static kmeans_codebook fit(const vector_block& x, const vector_block& w, unsigned bits,
                               const kmeans_options& opt = {}, const kmeans_codebook* init = nullptr) {
        const auto dim = static_cast<std::size_t>(x.cols());
        check_shape(dim, bits);
        detail::check_block(x, w, dim, "kmeans_codebook::fit");
        if (x.rows() == 0) throw invalid_argument("kmeans_codebook::fit: no vectors");
        if (init != nullptr && (init->dim() != dim || init->code_bits() != bits))
            throw invalid_argument(fmt::format("kmeans_codebook::fit: init has dim {} bits {}, asked dim {} bits {}",
                                               init->dim(), init->code_bits(), dim, bits));
        // The sample the fit runs on.
        const std::vector<Eigen::Index> rows = detail::sample_rows(x.rows(), opt.max_samples);
        const auto n = static_cast<Eigen::Index>(rows.size()), d = x.cols();
        vector_block xs(n, d), ws(n, d);
        for (Eigen::Index i = 0; i < n; ++i) {
            xs.row(i) = x.row(rows[static_cast<std::size_t>(i)]);
            if (w.size()) ws.row(i) = w.row(rows[static_cast<std::size_t>(i)]);
            else ws.row(i).setOnes();
        }
        kmeans_codebook c;
        c.dim_ = dim;
        c.bits_ = bits;
        if (init != nullptr) c.entries_ = init->entries_;
        else c.entries_ = seed_plus_plus(xs, ws, Eigen::Index{1} << bits, opt.seed, opt.zero_entry);
        c.zero_entry_ = opt.zero_entry;
        if (c.zero_entry_) c.entries_.row(0).setZero();
        std::vector<std::uint32_t> codes(static_cast<std::size_t>(n));
        std::vector<float> dist(static_cast<std::size_t>(n));
        for (unsigned it = 0; it < opt.iterations; ++it) {
            c.nearest(xs, ws, codes, dist);
            c.update_centroids(xs, ws, codes, dist);
        }
        return c;
    }

    std::size_t dim() const noexcept { return dim_; }
    // Entry 0 pinned to zero (kmeans_options::zero_entry); refits keep it there.
    bool zero_entry() const noexcept { return zero_entry_; }
    std::size_t entries() const noexcept { return static_cast<std::size_t>(entries_.rows()); }
    unsigned code_bits() const noexcept { return bits_; }
    // Every entry in fp16.
    std::size_t stored_bits() const noexcept { return entries() * dim_ * 16; }
    const vector_block& values() const noexcept { return entries_; }
    // The stored form: entries() * dim() halves, entry-major.
    std::vector<std::uint16_t> halves() const {
        std::vector<std::uint16_t> out(static_cast<std::size_t>(entries_.size()));
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = float_to_half(entries_.data()[i]);
        return out;
    }

    // Nearest entry to x (dim floats) in plain squared distance.
    std::uint32_t encode(std::span<const float> x) const {
        if (x.size() != dim_)
            throw invalid_argument(fmt::format("kmeans_codebook::encode: {} values, dim {}", x.size(), dim_));
        vector_block xb(1, static_cast<Eigen::Index>(dim_));
        std::copy(x.begin(), x.end(), xb.data());
        detail::check_block(xb, vector_block(), dim_, "kmeans_codebook::encode");
        std::vector<std::uint32_t> code(1);
        std::vector<float> dist(1);
        nearest(xb, vector_block(), code, dist);
        return code[0];
    }

    // codes[i] = the entry nearest to row i of x under the weights w (empty:
    // all 1); dist[i] (if not empty) its weighted squared distance.
    void encode(const vector_block& x, const vector_block& w, std::span<std::uint32_t> codes,
                std::span<float> dist = {}) const {
        detail::check_block(x, w, dim_, "kmeans_codebook::encode");
        if (codes.size() != static_cast<std::size_t>(x.rows()) || (!dist.empty() && dist.size() != codes.size()))
            throw invalid_argument(fmt::format("kmeans_codebook::encode: {} codes / {} distances for {} vectors",
                                               codes.size(), dist.size(), x.rows()));
        std::vector<float> scratch;
        if (dist.empty()) {
            scratch.resize(codes.size());
            dist = scratch;
        }
        nearest(x, w, codes, dist);
    }

    // out (dim floats) = entry `code`. Throws svq::corrupt_data for code >= entries().
    void decode(std::uint32_t code, std::span<float> out) const {
        if (code >= entries())
            throw corrupt_data(fmt::format("kmeans_codebook: code {} of a codebook of {} entries", code, entries()));
        if (out.size() != dim_)
            throw invalid_argument(fmt::format("kmeans_codebook::decode: output {} values, dim {}", out.size(), dim_));
        const float* e = entries_.data() + static_cast<std::size_t>(code) * dim_;
        std::copy(e, e + dim_, out.begin());
    }
    const float* entry(std::uint32_t code) const noexcept { return entries_.data() + static_cast<std::size_t>(code) * dim_; }

    // Replaces the entries (2^bits x dim), rounded to fp16.
    void set_values(const vector_block& v) {
        if (v.rows() != entries_.rows() || v.cols() != entries_.cols())
            throw invalid_argument(fmt::format("kmeans_codebook::set_values: {} x {} for a {} x {} codebook", v.rows(),
                                               v.cols(), entries_.rows(), entries_.cols()));
        entries_ = v.unaryExpr([](float a) { return detail::round_to_half(a); });
        if (zero_entry_) entries_.row(0).setZero();
    }

private:
    static void check_shape(std::size_t dim, unsigned bits) {
        if (dim == 0) throw invalid_argument("kmeans_codebook: dim = 0 must be >= 1");
        if (bits == 0 || bits > 16) throw invalid_argument(fmt::format("kmeans_codebook: bits = {} must be in [1, 16]", bits));
    }

    // Weighted nearest entry per row, in chunks (the distance block stays small).
    void nearest(const vector_block& x, const vector_block& w, std::span<std::uint32_t> codes,
                 std::span<float> dist) const {
        constexpr Eigen::Index chunk = 2048;
        const Eigen::MatrixXf ct = entries_.transpose();                        // d x K
        const Eigen::MatrixXf c2t = entries_.cwiseProduct(entries_).transpose();  // d x K
        const Eigen::RowVectorXf c2sum = c2t.colwise().sum();
        Eigen::MatrixXf scores;
        for (Eigen::Index b = 0; b < x.rows(); b += chunk) {
            const Eigen::Index m = std::min(chunk, x.rows() - b);
            const auto xb = x.middleRows(b, m);
            if (w.size() == 0) {
                scores.noalias() = xb * ct;
                scores *= -2.0f;
                scores.rowwise() += c2sum;
            } else {
                const auto wb = w.middleRows(b, m);
                scores.noalias() = wb.cwiseProduct(xb) * ct;
                scores *= -2.0f;
                scores.noalias() += wb * c2t;
            }
            for (Eigen::Index i = 0; i < m; ++i) {
                Eigen::Index best = 0;
                const float s = scores.row(i).minCoeff(&best);
                const float xx = w.size() == 0 ? xb.row(i).squaredNorm()
                                               : w.row(b + i).cwiseProduct(xb.row(i).cwiseAbs2()).sum();
                codes[static_cast<std::size_t>(b + i)] = static_cast<std::uint32_t>(best);
                dist[static_cast<std::size_t>(b + i)] = std::max(0.0f, s + xx);
            }
        }
    }

    // Weighted centroid per coordinate: c_ek = sum w x / sum w over the vectors
    // coded e (a coordinate no vector of e weighs keeps its value); an entry
    // no vector uses takes the vector with the largest current distance.
    void update_centroids(const vector_block& x, const vector_block& w, std::span<const std::uint32_t> codes,
                          std::span<float> dist) {
        const Eigen::Index k = entries_.rows(), d = entries_.cols();
        Eigen::MatrixXd sum_wx = Eigen::MatrixXd::Zero(k, d), sum_w = Eigen::MatrixXd::Zero(k, d);
        std::vector<std::size_t> count(static_cast<std::size_t>(k), 0);
        for (Eigen::Index i = 0; i < x.rows(); ++i) {
            const auto e = static_cast<Eigen::Index>(codes[static_cast<std::size_t>(i)]);
            ++count[static_cast<std::size_t>(e)];
            for (Eigen::Index j = 0; j < d; ++j) {
                const double wij = w.size() ? static_cast<double>(w(i, j)) : 1.0;
                sum_w(e, j) += wij;
                sum_wx(e, j) += wij * static_cast<double>(x(i, j));
            }
        }
        for (Eigen::Index e = zero_entry_ ? 1 : 0; e < k; ++e) {
            if (count[static_cast<std::size_t>(e)] == 0) {
                const auto far = static_cast<Eigen::Index>(std::max_element(dist.begin(), dist.end()) - dist.begin());
                entries_.row(e) = x.row(far).unaryExpr([](float v) { return detail::round_to_half(v); });
                dist[static_cast<std::size_t>(far)] = 0.0f;
                continue;
            }
            for (Eigen::Index j = 0; j < d; ++j)
                if (sum_w(e, j) > 0.0) entries_(e, j) = detail::round_to_half(static_cast<float>(sum_wx(e, j) / sum_w(e, j)));
        }
    }

    // k-means++: the first entry a uniformly drawn vector, each next one a
    // vector drawn with probability proportional to its weighted distance to
    // the nearest entry so far (drawn from the seeded splitmix64 stream).
    static vector_block seed_plus_plus(const vector_block& x, const vector_block& w, Eigen::Index k,
                                       std::uint64_t seed, bool zero_entry) {
        const Eigen::Index n = x.rows(), d = x.cols();
        detail::splitmix64 rng(seed);
        vector_block c(k, d);
        std::vector<double> best(static_cast<std::size_t>(n), std::numeric_limits<double>::infinity());
        auto pick = static_cast<Eigen::Index>(rng.next() % static_cast<std::uint64_t>(n));
        for (Eigen::Index e = 0; e < k; ++e) {
            if (e == 0 && zero_entry) c.row(e).setZero();
            else c.row(e) = x.row(pick).unaryExpr([](float v) { return detail::round_to_half(v); });
            double total = 0.0;
            for (Eigen::Index i = 0; i < n; ++i) {
                const double dd = (w.row(i).cast<double>().array() *
                                   (x.row(i).cast<double>() - c.row(e).cast<double>()).array().square())
                                      .sum();
                best[static_cast<std::size_t>(i)] = std::min(best[static_cast<std::size_t>(i)], dd);
                total += best[static_cast<std::size_t>(i)];
            }
            if (e + 1 == k) break;
            if (!(total > 0.0)) {  // every vector already coded exactly: any vector will do
                pick = static_cast<Eigen::Index>(rng.next() % static_cast<std::uint64_t>(n));
                continue;
            }
            const double coin = rng.next_open_unit() * total;
            double cumulative = 0.0;
            pick = n - 1;
            for (Eigen::Index i = 0; i < n; ++i) {
                cumulative += best[static_cast<std::size_t>(i)];
                if (coin < cumulative) {
                    pick = i;
                    break;
                }
            }
        }
        return c;
    }

    std::size_t dim_ = 0;
    unsigned bits_ = 0;
    bool zero_entry_ = false;
    vector_block entries_;  // 2^bits x dim, every value fp16-exact
};

static_assert(Codebook<kmeans_codebook>);

// ---- additive codebooks: x ~ sum_m C_m[code_m] ----

namespace detail {

inline void check_additive(std::span<const kmeans_codebook> books, const vector_block& x, const vector_block& w,
                           std::span<const std::uint32_t> codes, const char* who) {
    if (books.empty()) throw invalid_argument(fmt::format("{}: no codebooks", who));
    for (const kmeans_codebook& b : books)
        if (b.dim() != books.front().dim())
            throw invalid_argument(fmt::format("{}: codebooks of dimension {} and {}", who, books.front().dim(), b.dim()));
    check_block(x, w, books.front().dim(), who);
    if (codes.size() != static_cast<std::size_t>(x.rows()) * books.size())
        throw invalid_argument(fmt::format("{}: {} codes for {} vectors x {} codebooks", who, codes.size(), x.rows(),
                                           books.size()));
}

}  // namespace detail

// sum over vectors of sum_k w_vk (x_vk - sum_m C_m[codes(v, m)]_k)^2, in double;
// codes: x.rows() x books.size(), row-major.
inline double additive_error(std::span<const kmeans_codebook> books, const vector_block& x, const vector_block& w,
                             std::span<const std::uint32_t> codes) {
    detail::check_additive(books, x, w, codes, "additive_error");
    const std::size_t m = books.size(), d = books.front().dim();
    double total = 0.0;
    for (Eigen::Index i = 0; i < x.rows(); ++i)
        for (std::size_t k = 0; k < d; ++k) {
            double r = x(i, static_cast<Eigen::Index>(k));
            for (std::size_t b = 0; b < m; ++b) {
                const std::uint32_t code = codes[static_cast<std::size_t>(i) * m + b];
                if (code >= books[b].entries())
                    throw corrupt_data(fmt::format("additive_error: code {} of a codebook of {} entries", code, books[b].entries()));
                r -= static_cast<double>(books[b].entry(code)[k]);
            }
            const double wk = w.size() ? static_cast<double>(w(i, static_cast<Eigen::Index>(k))) : 1.0;
            total += wk * r * r;
        }
    return total;
}

// Beam search over additive codebooks: codes (x.rows() x books.size(),
// row-major) minimising the weighted error of x - sum_m C_m[code_m], keeping
// the `beam` best partial sums after each codebook (beam = 1: greedy, each
// codebook coding the residual of the ones before). Each step scores every
// (beam, entry) pair with the GEMM form of the file comment.
inline void beam_encode(std::span<const kmeans_codebook> books, const vector_block& x, const vector_block& w,
                        std::size_t beam, std::span<std::uint32_t> codes) {
    detail::check_additive(books, x, w, codes, "beam_encode");
    if (beam == 0) throw invalid_argument("beam_encode: beam width 0 must be >= 1");
    const std::size_t m = books.size();
    const Eigen::Index d = x.cols();
    constexpr Eigen::Index chunk = 512;
    struct candidate {
        float error;
        std::uint32_t parent, entry;
    };
    for (Eigen::Index b0 = 0; b0 < x.rows(); b0 += chunk) {
        const Eigen::Index n = std::min(chunk, x.rows() - b0);
        // Live beams: beams_per[i] of vector i, their residuals, and code paths.
        std::size_t width = 1;
        vector_block res = x.middleRows(b0, n);                       // (n * width) x d
        vector_block wts = w.size() ? vector_block(w.middleRows(b0, n)) : vector_block::Ones(n, d);
        std::vector<std::uint32_t> paths(static_cast<std::size_t>(n) * m, 0);  // (n * width) x m
        std::vector<float> errs(static_cast<std::size_t>(n));
        for (std::size_t s = 0; s < m; ++s) {
            const vector_block& c = books[s].values();
            const Eigen::MatrixXf ct = c.transpose(), c2t = c.cwiseProduct(c).transpose();
            Eigen::MatrixXf scores = wts.cwiseProduct(res) * ct;
            scores *= -2.0f;
            scores.noalias() += wts * c2t;
            const std::size_t k = books[s].entries();
            const std::size_t next_width = std::min(beam, width * k);
            vector_block next_res(n * static_cast<Eigen::Index>(next_width), d),
                next_wts(n * static_cast<Eigen::Index>(next_width), d);
            std::vector<std::uint32_t> next_paths(static_cast<std::size_t>(n) * next_width * m, 0);
            std::vector<float> next_errs(static_cast<std::size_t>(n) * next_width);
            std::vector<candidate> cand;
            for (Eigen::Index i = 0; i < n; ++i) {
                cand.clear();
                for (std::size_t p = 0; p < width; ++p) {
                    const auto row = static_cast<Eigen::Index>(static_cast<std::size_t>(i) * width + p);
                    const float rr = wts.row(row).cwiseProduct(res.row(row).cwiseAbs2()).sum();
                    for (std::size_t e = 0; e < k; ++e)
                        cand.push_back({std::max(0.0f, rr + scores(row, static_cast<Eigen::Index>(e))),
                                        static_cast<std::uint32_t>(p), static_cast<std::uint32_t>(e)});
                }
                const auto less = [](const candidate& a, const candidate& b) {
                    return a.error != b.error ? a.error < b.error
                                              : (a.parent != b.parent ? a.parent < b.parent : a.entry < b.entry);
                };
                std::partial_sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(next_width), cand.end(), less);
                for (std::size_t q = 0; q < next_width; ++q) {
                    const candidate& cq = cand[q];
                    const auto from = static_cast<Eigen::Index>(static_cast<std::size_t>(i) * width + cq.parent);
                    const auto to = static_cast<Eigen::Index>(static_cast<std::size_t>(i) * next_width + q);
                    next_res.row(to) = res.row(from) - c.row(static_cast<Eigen::Index>(cq.entry));
                    next_wts.row(to) = wts.row(from);
                    std::copy_n(paths.data() + static_cast<std::size_t>(from) * m, m,
                                next_paths.data() + static_cast<std::size_t>(to) * m);
                    next_paths[static_cast<std::size_t>(to) * m + s] = cq.entry;
                    next_errs[static_cast<std::size_t>(to)] = cq.error;
                }
            }
            res = std::move(next_res);
            wts = std::move(next_wts);
            paths = std::move(next_paths);
            errs = std::move(next_errs);
            width = next_width;
        }
        for (Eigen::Index i = 0; i < n; ++i)  // beam 0 of each vector is its best
            std::copy_n(paths.data() + static_cast<std::size_t>(i) * width * m, m,
                        codes.data() + static_cast<std::size_t>(b0 + i) * m);
    }
}

// Least-squares refit of all entries of the additive codebooks for fixed codes
// (x.rows() x books.size(), row-major). Coordinates separate (the weights are
// per coordinate), so for each coordinate k the entries' k-th values z solve
//   (A^T Omega_k A + eps I) z = A^T Omega_k x_k + eps z_old
// with A the 0/1 matrix of which entries each vector uses (one per codebook)
// and Omega_k = diag(w_vk): Eigen LDLT on a (sum of entries)^2 system. The
// small ridge eps (1e-7 of the mean diagonal) keeps entries no vector uses
// at their old values. The result minimises error + eps ||z - z_old||^2, so
// in exact arithmetic the error never rises; after rounding to fp16 it could,
// so the new entries are kept only when the stored error is not larger.
// Returns the error after (== before when the refit was not kept).
inline double refine_least_squares(std::span<kmeans_codebook> books, const vector_block& x, const vector_block& w,
                                   std::span<const std::uint32_t> codes) {
    const std::span<const kmeans_codebook> cbooks(books.data(), books.size());
    detail::check_additive(cbooks, x, w, codes, "refine_least_squares");
    const double before = additive_error(cbooks, x, w, codes);
    const std::size_t m = books.size();
    const auto d = static_cast<Eigen::Index>(books.front().dim());
    std::vector<std::size_t> offset(m + 1, 0);
    for (std::size_t b = 0; b < m; ++b) offset[b + 1] = offset[b] + books[b].entries();
    const auto t = static_cast<Eigen::Index>(offset[m]);
    std::vector<vector_block> fresh(m);
    for (std::size_t b = 0; b < m; ++b) fresh[b] = books[b].values();
    std::vector<Eigen::Index> idx(m);
    for (Eigen::Index k = 0; k < d; ++k) {
        Eigen::MatrixXd g = Eigen::MatrixXd::Zero(t, t);
        Eigen::VectorXd rhs = Eigen::VectorXd::Zero(t), old(t);
        for (std::size_t b = 0; b < m; ++b)
            for (std::size_t e = 0; e < books[b].entries(); ++e)
                old(static_cast<Eigen::Index>(offset[b] + e)) = books[b].entry(static_cast<std::uint32_t>(e))[k];
        for (Eigen::Index i = 0; i < x.rows(); ++i) {
            const double wk = w.size() ? static_cast<double>(w(i, k)) : 1.0;
            if (wk == 0.0) continue;
            for (std::size_t b = 0; b < m; ++b)
                idx[b] = static_cast<Eigen::Index>(offset[b] + codes[static_cast<std::size_t>(i) * m + b]);
            const double xv = wk * static_cast<double>(x(i, k));
            for (std::size_t a = 0; a < m; ++a) {
                rhs(idx[a]) += xv;
                for (std::size_t b = 0; b < m; ++b) g(idx[a], idx[b]) += wk;
            }
        }
        const double eps = 1e-7 * std::max(g.diagonal().mean(), std::numeric_limits<double>::min());
        g.diagonal().array() += eps;
        rhs += eps * old;
        for (std::size_t b = 0; b < m; ++b)
            if (books[b].zero_entry()) {  // z = 0 for a pinned entry: drop it from the system
                const auto v = static_cast<Eigen::Index>(offset[b]);
                g.row(v).setZero();
                g.col(v).setZero();
                g(v, v) = 1.0;
                rhs(v) = 0.0;
            }
        const Eigen::VectorXd z = g.ldlt().solve(rhs);
        if (!z.allFinite()) return before;
        for (std::size_t b = 0; b < m; ++b)
            for (std::size_t e = 0; e < books[b].entries(); ++e)
                fresh[b](static_cast<Eigen::Index>(e), k) = static_cast<float>(z(static_cast<Eigen::Index>(offset[b] + e)));
    }
    std::vector<kmeans_codebook> saved(books.begin(), books.end());
    for (std::size_t b = 0; b < m; ++b) books[b].set_values(fresh[b]);
    const double after = additive_error(cbooks, x, w, codes);
    if (after <= before) return after;
    std::copy(saved.begin(), saved.end(), books.begin());
    return before;
}

}  // namespace svq
