// CRVQ: channel-relaxed vector quantization (arXiv 2412.09282), with a
// k-means or a PVQ base. docs/crvq.md has the method and the bit accounting.
//
// For each matrix W (rows x cols; input channels are columns):
//  1. base: k-means codebook C0 (vectors of base_dim consecutive columns of a
//     row, 2^base_bits entries) or svq's PVQ codec (Hessian PVQ when H is
//     given, hessian/gptq.hpp);
//  2. importance of input channel j from the base residual and diag H:
//     I_j = mean_i (W_ij - Q(W)_ij)^2 H_jj; channels sorted by decreasing
//     importance, the first lambda * cols (rounded, at least 1) are critical;
//  3. k-means base with permute_base: the columns are reordered by importance
//     and C0 is refitted (Lloyd from the old entries) and re-encoded in that
//     order; the whole permutation is stored (cols * ceil(log2 cols) bits).
//     Without it (and always with the PVQ base, whose rotation mixes the
//     channels anyway) only the critical channels' indices are stored;
//  4. extended codebooks C1..Cm (vectors of extended_dim consecutive rows of
//     one critical column) are fitted one after the other to the residual the
//     ones before leave (the base residual of the critical columns corrected
//     for its correlation with the other columns' errors through H,
//     detail::critical_target), then codes are chosen jointly by beam search and the
//     codebooks refitted jointly by least squares (refine_rounds times);
//  5. decode is additive and returns the original column order:
//     W^_{i, perm(p)} = s_i (C0 entry at position p + sum_m Cm entries).
// Every fit and search minimises the diagonal-Hessian proxy loss
// sum_ij s_i^2 H_jj (W_ij / s_i - q_ij)^2 (plain MSE without H): the vector
// weights of codebook.hpp are s_i^2 H_jj, divided per matrix by
// sum_ij H_jj W_ij^2 / (rows cols) so that matrices sharing codebooks each
// weigh by their relative error.
//
// Codebooks are shared by every matrix quantized in one call (crvq_model):
// their fp16 bits are counted once for the model. One call per matrix gives
// per-matrix codebooks.
#pragma once

#include <svq/crvq/codebook.hpp>
#include <svq/error.hpp>
#include <svq/hessian/calibration.hpp>
#include <svq/hessian/gptq.hpp>
#include <svq/matrix/auto_config.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/quantize.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace svq {

enum class crvq_base { kmeans, pvq };

struct crvq_config {
    crvq_base base = crvq_base::kmeans;
    // k-means base: vectors of base_dim consecutive columns, 2^base_bits entries.
    std::size_t base_dim = 8;
    unsigned base_bits = 8;
    // Extended codebooks of the critical channels: vectors of extended_dim
    // consecutive rows of one critical column, 2^extended_bits entries each.
    std::size_t extended_codebooks = 3;
    std::size_t extended_dim = 8;
    unsigned extended_bits = 8;
    double critical_fraction = 0.02;  // lambda; 0 (or no extended codebooks): base only
    // 0: one fp32 scale per matrix (its RMS); 8 or 16: a row scale per row
    // (detail::row_scale_codec, relative to the largest row RMS). PVQ base: ignored (0).
    unsigned row_scale_bits = 0;
    bool permute_base = true;  // k-means base: base vectors in importance order
    kmeans_options kmeans{};
    std::size_t beam_width = 4;
    unsigned refine_rounds = 2;  // rounds of (encode, least-squares refit) per codebook set
    // PVQ base: the configuration, or the best one at <= pvq_target_bpw
    // (Hessian choose_config when the layer has H, else the plain one).
    double pvq_target_bpw = 1.0;
    std::optional<matrix_config> pvq_config;
    auto_config_options pvq_search{};  // candidates choose_config tries
    gptq_options gptq{};
};

// One matrix to quantize: w rows x cols row-major; h cols x cols row-major or
// empty (plain MSE). Pass a damped H (the PVQ base's Hessian search needs it
// positive definite); only its diagonal steers the codebooks.
struct crvq_layer {
    std::span<const float> w;
    std::size_t rows = 0, cols = 0;
    std::span<const double> h;
};

// The codebooks of one call, shared by its matrices.
struct crvq_codebooks {
    std::optional<kmeans_codebook> base;    // k-means base only
    std::vector<kmeans_codebook> extended;  // C1..Cm
    std::size_t stored_bits() const noexcept {
        std::size_t bits = base ? base->stored_bits() : 0;
        for (const kmeans_codebook& c : extended) bits += c.stored_bits();
        return bits;
    }
};

namespace detail {

// Bits of one column index: ceil(log2 cols).
inline unsigned column_index_bits(std::size_t cols) noexcept {
    return cols <= 1 ? 0u : static_cast<unsigned>(std::bit_width(cols - 1));
}

inline std::size_t critical_count(const crvq_config& c, std::size_t cols) {
    if (c.extended_codebooks == 0 || c.critical_fraction == 0.0) return 0;
    const auto n = static_cast<std::size_t>(std::llround(c.critical_fraction * static_cast<double>(cols)));
    return std::clamp<std::size_t>(n, 1, cols);
}

inline void check_crvq_config(const crvq_config& c) {
    if (c.base_dim == 0) throw invalid_argument("crvq: base_dim = 0 must be >= 1");
    if (c.extended_dim == 0) throw invalid_argument("crvq: extended_dim = 0 must be >= 1");
    if (c.base_bits == 0 || c.base_bits > 16)
        throw invalid_argument(fmt::format("crvq: base_bits = {} must be in [1, 16]", c.base_bits));
    if (c.extended_codebooks > 0 && (c.extended_bits == 0 || c.extended_bits > 16))
        throw invalid_argument(fmt::format("crvq: extended_bits = {} must be in [1, 16]", c.extended_bits));
    if (!(c.critical_fraction >= 0.0 && c.critical_fraction <= 1.0))
        throw invalid_argument(fmt::format("crvq: critical_fraction = {} must be in [0, 1]", c.critical_fraction));
    if (c.row_scale_bits != 0 && c.row_scale_bits != 8 && c.row_scale_bits != 16)
        throw invalid_argument(fmt::format("crvq: row_scale_bits = {} must be 0, 8 or 16", c.row_scale_bits));
    if (c.beam_width == 0) throw invalid_argument("crvq: beam_width = 0 must be >= 1");
    if (c.base == crvq_base::pvq && !c.pvq_config) check_target(c.pvq_target_bpw);
}

}  // namespace detail

// One quantized matrix. Its codebooks are shared (crvq_model); stored_bits()
// counts what is its own.
class crvq_matrix {
public:
    crvq_matrix() = default;

    // From stored parts. permutation: cols entries (base in importance order)
    // or `critical` entries (the critical channels, most important first);
    // base_codes: rows * ceil(cols / base_dim) (k-means base; empty with a
    // PVQ base, which comes in pvq); extended_codes: critical *
    // ceil(rows / extended_dim) * books->extended.size(), ordered (channel,
    // row block, codebook); row_scale_codes: rows codes when row_scale_bits > 0.
    // Throws svq::corrupt_data when a size does not match, the permutation
    // repeats or exceeds a column, or a code exceeds its codebook.
    crvq_matrix(std::size_t rows, std::size_t cols, std::shared_ptr<const crvq_codebooks> books, float reference_scale,
                unsigned row_scale_bits, std::vector<std::uint32_t> row_scale_codes,
                std::vector<std::uint32_t> permutation, std::size_t critical, std::vector<std::uint32_t> base_codes,
                std::optional<quantized_matrix> pvq, std::vector<std::uint32_t> extended_codes)
        : rows_(rows),
          cols_(cols),
          books_(std::move(books)),
          scales_{row_scale_bits, reference_scale},
          row_scale_codes_(std::move(row_scale_codes)),
          permutation_(std::move(permutation)),
          critical_(critical),
          base_codes_(std::move(base_codes)),
          pvq_(std::move(pvq)),
          extended_codes_(std::move(extended_codes)) {
        validate();
    }

    std::size_t rows() const noexcept { return rows_; }
    std::size_t cols() const noexcept { return cols_; }
    std::size_t critical_channels() const noexcept { return critical_; }
    bool base_permuted() const noexcept { return permutation_.size() == cols_ && cols_ > critical_; }
    // Position p -> original column (the first critical_channels() are the critical ones).
    std::span<const std::uint32_t> permutation() const noexcept { return permutation_; }
    std::span<const std::uint32_t> base_codes() const noexcept { return base_codes_; }
    std::span<const std::uint32_t> extended_codes() const noexcept { return extended_codes_; }
    std::span<const std::uint32_t> row_scale_codes() const noexcept { return row_scale_codes_; }
    const std::optional<quantized_matrix>& pvq_base() const noexcept { return pvq_; }
    const crvq_codebooks& codebooks() const noexcept { return *books_; }
    float reference_scale() const noexcept { return scales_.ref; }
    unsigned row_scale_bits() const noexcept { return scales_.bits; }

    // The matrix's own bits: fp32 reference scale, row scale codes, stored
    // permutation (ceil(log2 cols) bits an entry), base codes (or the PVQ
    // matrix's stored bits), extended codes. The shared codebooks are not in it.
    std::size_t stored_bits() const noexcept {
        std::size_t bits = 32 + row_scale_codes_.size() * row_scale_bits() +
                           permutation_.size() * detail::column_index_bits(cols_) +
                           extended_codes_.size() * extended_bits();
        if (pvq_) bits += pvq_->stored_bits();
        else if (books_->base) bits += base_codes_.size() * books_->base->code_bits();
        return bits;
    }

    // rows x cols row-major, original column order, with the first
    // `extended_used` extended codebooks (default: all).
    std::vector<float> dequantize(std::size_t extended_used = static_cast<std::size_t>(-1)) const {
        std::vector<float> out(rows_ * cols_, 0.0f);
        const std::size_t m = books_->extended.size();
        extended_used = std::min(extended_used, m);
        std::vector<double> s(rows_);
        for (std::size_t r = 0; r < rows_; ++r) s[r] = row_scale(r);
        if (pvq_) {
            pvq_->dequantize(out);
        } else {
            const kmeans_codebook& c0 = *books_->base;
            const std::size_t d = c0.dim(), per_row = (cols_ + d - 1) / d;
            const bool permuted = base_permuted();
            std::vector<float> positions(per_row * d);  // one row in position order, padded
            for (std::size_t r = 0; r < rows_; ++r) {
                float* row = out.data() + r * cols_;
                float* dst = permuted ? positions.data() : row;
                const auto sr = static_cast<float>(s[r]);
                const std::uint32_t* codes = base_codes_.data() + r * per_row;
                const std::size_t full = permuted ? per_row : cols_ / d;
                for (std::size_t v = 0; v < full; ++v) {
                    const float* e = c0.entry(codes[v]);
                    for (std::size_t k = 0; k < d; ++k) dst[v * d + k] = sr * e[k];
                }
                if (permuted) {
                    for (std::size_t p = 0; p < cols_; ++p) row[permutation_[p]] = positions[p];
                } else if (full < per_row) {  // the tail vector of a row not a multiple of d
                    const float* e = c0.entry(codes[full]);
                    for (std::size_t k = 0; full * d + k < cols_; ++k) row[full * d + k] = sr * e[k];
                }
            }
        }
        if (extended_used == 0 || critical_ == 0) return out;
        const std::size_t de = books_->extended.front().dim(), blocks = (rows_ + de - 1) / de;
        for (std::size_t c = 0; c < critical_; ++c) {
            const std::size_t j = permutation_[c];
            for (std::size_t v = 0; v < blocks; ++v) {
                const std::uint32_t* codes = extended_codes_.data() + (c * blocks + v) * m;
                for (std::size_t k = 0; k < de && v * de + k < rows_; ++k) {
                    const std::size_t r = v * de + k;
                    float add = 0.0f;
                    for (std::size_t b = 0; b < extended_used; ++b) add += books_->extended[b].entry(codes[b])[k];
                    out[r * cols_ + j] += static_cast<float>(s[r] * add);
                }
            }
        }
        return out;
    }

    // The scale s_i of row r's codewords (the matrix RMS without row scales).
    double row_scale(std::size_t r) const {
        return row_scale_codes_.empty() ? static_cast<double>(scales_.ref) : scales_.decode(row_scale_codes_[r]);
    }

private:
    unsigned extended_bits() const noexcept {
        return books_->extended.empty() ? 0u : books_->extended.front().code_bits();
    }

    void validate() const {
        if (!books_) throw corrupt_data("crvq_matrix: no codebooks");
        if (!std::isfinite(scales_.ref) || scales_.ref < 0.0f)
            throw corrupt_data(fmt::format("crvq_matrix: reference scale {} is not finite and >= 0", scales_.ref));
        if (scales_.bits != 0 && scales_.bits != 8 && scales_.bits != 16)
            throw corrupt_data(fmt::format("crvq_matrix: row scale bits {} (0, 8 or 16)", scales_.bits));
        if (row_scale_codes_.size() != (scales_.bits ? rows_ : 0))
            throw corrupt_data(fmt::format("crvq_matrix: {} row scale codes for {} rows at {} bits",
                                           row_scale_codes_.size(), rows_, scales_.bits));
        for (const std::uint32_t code : row_scale_codes_)
            if (scales_.bits && code >= (1u << scales_.bits))
                throw corrupt_data(fmt::format("crvq_matrix: row scale code {} wider than {} bits", code, scales_.bits));
        if (critical_ > cols_ || (permutation_.size() != critical_ && permutation_.size() != cols_))
            throw corrupt_data(fmt::format("crvq_matrix: {} permutation entries, {} critical channels, {} columns",
                                           permutation_.size(), critical_, cols_));
        std::vector<bool> seen(cols_, false);
        for (const std::uint32_t j : permutation_) {
            if (j >= cols_ || seen[j])
                throw corrupt_data(fmt::format("crvq_matrix: permutation entry {} repeated or >= cols {}", j, cols_));
            seen[j] = true;
        }
        if (pvq_) {
            if (pvq_->rows() != rows_ || pvq_->cols() != cols_ || !base_codes_.empty())
                throw corrupt_data(fmt::format("crvq_matrix: PVQ base {} x {} for a {} x {} matrix", pvq_->rows(),
                                               pvq_->cols(), rows_, cols_));
        } else {
            if (!books_->base) throw corrupt_data("crvq_matrix: neither a PVQ base nor a base codebook");
            const std::size_t d = books_->base->dim(), need = rows_ * ((cols_ + d - 1) / d);
            if (base_codes_.size() != need)
                throw corrupt_data(fmt::format("crvq_matrix: {} base codes, {} x {} with d = {} needs {}",
                                               base_codes_.size(), rows_, cols_, d, need));
            for (const std::uint32_t c : base_codes_)
                if (c >= books_->base->entries())
                    throw corrupt_data(fmt::format("crvq_matrix: base code {} of {} entries", c, books_->base->entries()));
        }
        const std::size_t m = books_->extended.size();
        const std::size_t de = m ? books_->extended.front().dim() : 1;
        const std::size_t need = critical_ * ((rows_ + de - 1) / de) * m;
        if (extended_codes_.size() != need)
            throw corrupt_data(fmt::format("crvq_matrix: {} extended codes, {} critical channels x {} rows x {} "
                                           "codebooks need {}",
                                           extended_codes_.size(), critical_, rows_, m, need));
        for (std::size_t i = 0; i < extended_codes_.size(); ++i)
            if (extended_codes_[i] >= books_->extended[i % m].entries())
                throw corrupt_data(fmt::format("crvq_matrix: extended code {} of {} entries", extended_codes_[i],
                                               books_->extended[i % m].entries()));
    }

    std::size_t rows_ = 0, cols_ = 0;
    std::shared_ptr<const crvq_codebooks> books_;
    detail::row_scale_codec scales_{};
    std::vector<std::uint32_t> row_scale_codes_;
    std::vector<std::uint32_t> permutation_;
    std::size_t critical_ = 0;
    std::vector<std::uint32_t> base_codes_;
    std::optional<quantized_matrix> pvq_;
    std::vector<std::uint32_t> extended_codes_;
};

// The matrices of one call and their shared codebooks.
struct crvq_model {
    std::shared_ptr<const crvq_codebooks> codebooks;
    std::vector<crvq_matrix> matrices;

    std::size_t weights() const noexcept {
        std::size_t n = 0;
        for (const crvq_matrix& m : matrices) n += m.rows() * m.cols();
        return n;
    }
    // Every matrix's own bits plus the shared codebooks once.
    std::size_t stored_bits() const noexcept {
        std::size_t bits = codebooks ? codebooks->stored_bits() : 0;
        for (const crvq_matrix& m : matrices) bits += m.stored_bits();
        return bits;
    }
    double bits_per_weight() const noexcept {
        return static_cast<double>(stored_bits()) / static_cast<double>(weights());
    }
};

namespace detail {

struct crvq_state {
    std::size_t rows = 0, cols = 0;
    const float* w = nullptr;
    std::vector<double> hdiag;  // cols
    float ref = 0.0f;
    std::vector<std::uint32_t> scale_codes;
    std::vector<double> s;  // decoded row scales
    double norm = 1.0;      // weight normalisation
    std::vector<std::uint32_t> order;       // position -> original column (base vectors)
    std::vector<std::uint32_t> importance;  // columns by decreasing importance
    std::size_t critical = 0;
    std::size_t pool_offset = 0;
    std::vector<float> base;  // base reconstruction, original units and order
    std::optional<quantized_matrix> pvq;
};

// Base vectors of every layer (rows * ceil(cols / d) each, in s.order), normalised values and weights.
inline void base_pool(std::vector<crvq_state>& states, std::size_t d, vector_block& x, vector_block& w) {
    std::size_t n = 0;
    for (crvq_state& s : states) {
        s.pool_offset = n;
        n += s.rows * ((s.cols + d - 1) / d);
    }
    x.setZero(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(d));
    w.setZero(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(d));
    for (const crvq_state& s : states) {
        const std::size_t per_row = (s.cols + d - 1) / d;
        for (std::size_t r = 0; r < s.rows; ++r) {
            const double inv = s.s[r] > 0.0 ? 1.0 / s.s[r] : 0.0;
            for (std::size_t p = 0; p < s.cols; ++p) {
                const std::size_t j = s.order[p];
                const auto i = static_cast<Eigen::Index>(s.pool_offset + r * per_row + p / d);
                const auto k = static_cast<Eigen::Index>(p % d);
                x(i, k) = static_cast<float>(s.w[r * s.cols + j] * inv);
                w(i, k) = static_cast<float>(s.s[r] * s.s[r] * s.hdiag[j] / s.norm);
            }
        }
    }
}

// Base reconstruction of each layer (original units and order) from the pool codes.
inline void base_from_codes(std::vector<crvq_state>& states, const kmeans_codebook& c0,
                            std::span<const std::uint32_t> codes) {
    const std::size_t d = c0.dim();
    for (crvq_state& s : states) {
        const std::size_t per_row = (s.cols + d - 1) / d;
        s.base.assign(s.rows * s.cols, 0.0f);
        for (std::size_t r = 0; r < s.rows; ++r)
            for (std::size_t p = 0; p < s.cols; ++p)
                s.base[r * s.cols + s.order[p]] =
                    static_cast<float>(s.s[r] * c0.entry(codes[s.pool_offset + r * per_row + p / d])[p % d]);
    }
}

// Channels by decreasing I_j = mean_i (W_ij - B_ij)^2 H_jj (ties: lower index first).
inline void rank_channels(crvq_state& s) {
    std::vector<double> imp(s.cols, 0.0);
    for (std::size_t r = 0; r < s.rows; ++r)
        for (std::size_t j = 0; j < s.cols; ++j) {
            const double e = static_cast<double>(s.w[r * s.cols + j]) - s.base[r * s.cols + j];
            imp[j] += e * e;
        }
    for (std::size_t j = 0; j < s.cols; ++j) imp[j] = imp[j] * s.hdiag[j] / static_cast<double>(s.rows);
    s.importance.resize(s.cols);
    std::iota(s.importance.begin(), s.importance.end(), 0u);
    std::stable_sort(s.importance.begin(), s.importance.end(),
                     [&](std::uint32_t a, std::uint32_t b) { return imp[a] > imp[b]; });
}

// What the extended codebooks of layer s should add to its critical columns S
// (rows x |S|, original units, S in importance order). The proxy loss of the
// base error E = W - B after adding D on the columns S (R: the other columns) is
//   tr((E - D) H (E - D)^T) = (T - D) H_SS (T - D)^T + const,
//   T = E_S + E_R H_RS H_SS^-1,
// so T, not E_S, is the target: it keeps the part of the base error that the
// other columns' errors cancel through H (large after a GPTQ-style base). The
// codebooks then fit T in the metric diag(H_SS). Without H, T = E_S.
inline Eigen::MatrixXd critical_target(const crvq_state& s, std::span<const double> h) {
    const auto rows = static_cast<Eigen::Index>(s.rows), nc = static_cast<Eigen::Index>(s.critical),
               nr = static_cast<Eigen::Index>(s.cols - s.critical);
    Eigen::MatrixXd es(rows, nc), er(rows, nr);
    for (Eigen::Index r = 0; r < rows; ++r)
        for (std::size_t p = 0; p < s.cols; ++p) {
            const std::size_t j = s.importance[p];
            const double e = static_cast<double>(s.w[static_cast<std::size_t>(r) * s.cols + j]) -
                             s.base[static_cast<std::size_t>(r) * s.cols + j];
            if (p < s.critical) es(r, static_cast<Eigen::Index>(p)) = e;
            else er(r, static_cast<Eigen::Index>(p - s.critical)) = e;
        }
    if (h.empty() || nr == 0) return es;
    Eigen::MatrixXd hss(nc, nc), hrs(nr, nc);
    for (std::size_t a = 0; a < s.cols; ++a)
        for (std::size_t b = 0; b < s.critical; ++b) {
            const double v = h[s.importance[a] * s.cols + s.importance[b]];
            if (a < s.critical) hss(static_cast<Eigen::Index>(a), static_cast<Eigen::Index>(b)) = v;
            else hrs(static_cast<Eigen::Index>(a - s.critical), static_cast<Eigen::Index>(b)) = v;
        }
    const Eigen::LDLT<Eigen::MatrixXd> ldlt(hss);
    if (ldlt.info() != Eigen::Success || !(ldlt.vectorD().array() > 0.0).all()) return es;  // H_SS singular: plain residual
    const Eigen::MatrixXd carry = ldlt.solve((er * hrs).transpose()).transpose();
    return es + carry;
}

// Base codes: fit (or refit from `init`), then rounds of least-squares refit and re-encoding.
inline kmeans_codebook fit_base(std::vector<crvq_state>& states, const crvq_config& c, const kmeans_codebook* init,
                                std::vector<std::uint32_t>& codes) {
    vector_block x, w;
    base_pool(states, c.base_dim, x, w);
    kmeans_codebook c0 = kmeans_codebook::fit(x, w, c.base_bits, c.kmeans, init);
    codes.assign(static_cast<std::size_t>(x.rows()), 0);
    c0.encode(x, w, codes);
    for (unsigned round = 0; round < c.refine_rounds; ++round) {
        refine_least_squares(std::span<kmeans_codebook>(&c0, 1), x, w, codes);
        c0.encode(x, w, codes);  // nearest entry: never worse than the codes it was refitted for
    }
    base_from_codes(states, c0, codes);
    return c0;
}

}  // namespace detail

// Quantizes every layer with shared codebooks. Throws svq::invalid_argument
// for no layers, a bad configuration, an empty or ragged matrix, a non-finite
// weight, or a Hessian of the wrong size or with a non-finite entry (and as
// the PVQ quantizers for the PVQ base).
inline crvq_model crvq_quantize(std::span<const crvq_layer> layers, const crvq_config& config) {
    detail::check_crvq_config(config);
    if (layers.empty()) throw invalid_argument("crvq_quantize: no layers");
    const bool pvq_base = config.base == crvq_base::pvq;
    std::vector<detail::crvq_state> states(layers.size());
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const crvq_layer& in = layers[l];
        detail::crvq_state& s = states[l];
        detail::check_matrix(in.w, in.rows, in.cols, "crvq_quantize");
        if (!in.h.empty()) {
            detail::check_hessian_shape(in.h, in.cols, "crvq_quantize");
            for (std::size_t j = 0; j < in.cols; ++j)
                if (!(in.h[j * in.cols + j] >= 0.0))
                    throw invalid_argument(fmt::format("crvq_quantize: H({0}, {0}) = {1} is negative", j, in.h[j * in.cols + j]));
        }
        s.rows = in.rows;
        s.cols = in.cols;
        s.w = in.w.data();
        s.hdiag.assign(in.cols, 1.0);
        if (!in.h.empty())
            for (std::size_t j = 0; j < in.cols; ++j) s.hdiag[j] = in.h[j * in.cols + j];
        const unsigned scale_bits = pvq_base ? 0u : config.row_scale_bits;
        double energy = 0.0, weighted = 0.0;
        for (std::size_t r = 0; r < s.rows; ++r)
            for (std::size_t j = 0; j < s.cols; ++j) {
                const double v = in.w[r * s.cols + j];
                energy += v * v;
                weighted += v * v * s.hdiag[j];
            }
        s.norm = weighted > 0.0 ? weighted / static_cast<double>(s.rows * s.cols) : 1.0;
        s.s.resize(s.rows);
        if (scale_bits == 0) {
            s.ref = static_cast<float>(std::sqrt(energy / static_cast<double>(s.rows * s.cols)));
            std::fill(s.s.begin(), s.s.end(), static_cast<double>(s.ref));
        } else {
            s.ref = detail::reference_scale(in.w, s.rows, s.cols);
            const detail::row_scale_codec codec{scale_bits, s.ref};
            s.scale_codes.resize(s.rows);
            for (std::size_t r = 0; r < s.rows; ++r) {
                double e = 0.0;
                for (std::size_t j = 0; j < s.cols; ++j) e += static_cast<double>(in.w[r * s.cols + j]) * in.w[r * s.cols + j];
                s.scale_codes[r] = codec.encode(std::sqrt(e / static_cast<double>(s.cols)));
                s.s[r] = codec.decode(s.scale_codes[r]);
            }
        }
        s.order.resize(s.cols);
        std::iota(s.order.begin(), s.order.end(), 0u);
        s.critical = detail::critical_count(config, s.cols);
    }
    auto books = std::make_shared<crvq_codebooks>();
    std::vector<std::uint32_t> base_codes;
    const bool extend = std::any_of(states.begin(), states.end(), [](const detail::crvq_state& s) { return s.critical > 0; });

    // 1-3: base, importance, reordering.
    if (pvq_base) {
        for (std::size_t l = 0; l < layers.size(); ++l) {
            const crvq_layer& in = layers[l];
            detail::crvq_state& s = states[l];
            s.pvq = quantize(in.w, in.rows, in.cols,
                             {.config = config.pvq_config,
                              .target_bpw = config.pvq_config ? 0.0 : config.pvq_target_bpw,
                              .hessian = in.h,
                              .choice = config.pvq_search,
                              .gptq = config.gptq});
            s.base = s.pvq->dequantize();
        }
    } else {
        books->base = detail::fit_base(states, config, nullptr, base_codes);
    }
    if (extend) {
        for (detail::crvq_state& s : states) detail::rank_channels(s);
        if (!pvq_base && config.permute_base) {
            for (detail::crvq_state& s : states)
                if (s.critical < s.cols) s.order = s.importance;
            books->base = detail::fit_base(states, config, &*books->base, base_codes);
        }
    }

    // 4: extended codebooks on the critical channels' residual.
    std::vector<std::uint32_t> ext_codes;
    std::vector<std::size_t> ext_offset(states.size(), 0);
    const std::size_t m = extend ? config.extended_codebooks : 0;
    if (m > 0) {
        const std::size_t de = config.extended_dim;
        std::size_t n = 0;
        for (std::size_t l = 0; l < states.size(); ++l) {
            ext_offset[l] = n;
            n += states[l].critical * ((states[l].rows + de - 1) / de);
        }
        // Per layer: the target T of the critical columns and U, the upper Cholesky
        // factor of H_SS^-1 (identity without H). Critical column c is coded against
        // its target plus the feedback of the columns coded before it (GPTQ over the
        // critical columns): e_c = (t_c - q_c) / U_cc, t_c' -= e_c U_cc' (c' > c),
        // which makes sum_c ||e_c||^2 the exact loss (T - D) H_SS (T - D)^T. The
        // vector weights are s_i^2 / U_cc^2 (normalised as the base's).
        std::vector<Eigen::MatrixXd> targets(states.size()), factors(states.size());
        for (std::size_t l = 0; l < states.size(); ++l) {
            const detail::crvq_state& s = states[l];
            targets[l] = detail::critical_target(s, layers[l].h);
            const auto nc = static_cast<Eigen::Index>(s.critical);
            if (layers[l].h.empty() || nc == 0) {
                factors[l] = Eigen::MatrixXd::Identity(nc, nc);
                continue;
            }
            std::vector<double> hss(s.critical * s.critical);
            for (std::size_t a = 0; a < s.critical; ++a)
                for (std::size_t b = 0; b < s.critical; ++b)
                    hss[a * s.critical + b] = layers[l].h[s.importance[a] * s.cols + s.importance[b]];
            factors[l] = detail::inverse_hessian_factor(hss, s.critical, "crvq_quantize");
        }
        vector_block x = vector_block::Zero(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(de));
        vector_block w = vector_block::Zero(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(de));
        // Pool rows of column c of layer l from its current target column t (original units).
        const auto fill = [&](std::size_t l, std::size_t c, const Eigen::VectorXd& t) {
            const detail::crvq_state& s = states[l];
            const std::size_t blocks = (s.rows + de - 1) / de;
            const double u = factors[l](static_cast<Eigen::Index>(c), static_cast<Eigen::Index>(c));
            for (std::size_t r = 0; r < s.rows; ++r) {
                const auto i = static_cast<Eigen::Index>(ext_offset[l] + c * blocks + r / de);
                const auto k = static_cast<Eigen::Index>(r % de);
                const double inv = s.s[r] > 0.0 ? 1.0 / s.s[r] : 0.0;
                x(i, k) = static_cast<float>(t(static_cast<Eigen::Index>(r)) * inv);
                w(i, k) = static_cast<float>(s.s[r] * s.s[r] / (u * u * s.norm));
            }
        };
        for (std::size_t l = 0; l < states.size(); ++l)
            for (std::size_t c = 0; c < states[l].critical; ++c) fill(l, c, targets[l].col(static_cast<Eigen::Index>(c)));
        ext_codes.assign(n * m, 0);
        vector_block residual = x;
        std::vector<std::uint32_t> codes(n);
        for (std::size_t b = 0; b < m; ++b) {  // each codebook fitted to the residual of the ones before
            kmeans_options opt = config.kmeans;
            opt.seed = detail::derive_seed(config.kmeans.seed, b + 1);
            opt.zero_entry = b == 0;  // the first codebook can code "no correction"
            books->extended.push_back(kmeans_codebook::fit(residual, w, config.extended_bits, opt));
            books->extended.back().encode(residual, w, codes);
            for (std::size_t i = 0; i < n; ++i) {
                ext_codes[i * m + b] = codes[i];
                residual.row(static_cast<Eigen::Index>(i)) -=
                    books->extended.back().values().row(static_cast<Eigen::Index>(codes[i]));
            }
        }
        // Column-by-column beam search with feedback; leaves in x the targets each column was coded against.
        const auto sequential = [&] {
            const std::span<const kmeans_codebook> cb(books->extended);
            for (std::size_t l = 0; l < states.size(); ++l) {
                const detail::crvq_state& s = states[l];
                const std::size_t blocks = (s.rows + de - 1) / de;
                const auto nc = static_cast<Eigen::Index>(s.critical);
                Eigen::MatrixXd work = targets[l];
                for (Eigen::Index c = 0; c < nc; ++c) {
                    fill(l, static_cast<std::size_t>(c), work.col(c));
                    const auto first = static_cast<Eigen::Index>(ext_offset[l] + static_cast<std::size_t>(c) * blocks);
                    const vector_block xb = x.middleRows(first, static_cast<Eigen::Index>(blocks));
                    const vector_block wb = w.middleRows(first, static_cast<Eigen::Index>(blocks));
                    const std::span<std::uint32_t> out(ext_codes.data() + static_cast<std::size_t>(first) * m, blocks * m);
                    beam_encode(cb, xb, wb, config.beam_width, out);
                    if (c + 1 == nc) break;
                    Eigen::VectorXd e(static_cast<Eigen::Index>(s.rows));
                    const double u = factors[l](c, c);
                    for (std::size_t r = 0; r < s.rows; ++r) {
                        double q = 0.0;
                        for (std::size_t b = 0; b < m; ++b) q += cb[b].entry(out[(r / de) * m + b])[r % de];
                        e(static_cast<Eigen::Index>(r)) = (work(static_cast<Eigen::Index>(r), c) - s.s[r] * q) / u;
                    }
                    work.rightCols(nc - c - 1).noalias() -= e * factors[l].row(c).tail(nc - c - 1);
                }
            }
        };
        for (unsigned round = 0; round <= config.refine_rounds; ++round) {
            sequential();
            if (round < config.refine_rounds) refine_least_squares(books->extended, x, w, ext_codes);
        }
    }

    // 5: assemble.
    crvq_model model;
    model.codebooks = books;
    const std::size_t d = config.base_dim;
    for (std::size_t l = 0; l < states.size(); ++l) {
        detail::crvq_state& s = states[l];
        std::vector<std::uint32_t> perm;
        if (!pvq_base && config.permute_base && s.critical > 0 && s.critical < s.cols) perm = s.order;
        else if (s.critical > 0) perm.assign(s.importance.begin(), s.importance.begin() + static_cast<std::ptrdiff_t>(s.critical));
        std::vector<std::uint32_t> codes;
        if (!pvq_base) {
            const std::size_t count = s.rows * ((s.cols + d - 1) / d);
            codes.assign(base_codes.begin() + static_cast<std::ptrdiff_t>(s.pool_offset),
                         base_codes.begin() + static_cast<std::ptrdiff_t>(s.pool_offset + count));
        }
        std::vector<std::uint32_t> ext;
        if (m > 0) {
            const std::size_t count = s.critical * ((s.rows + config.extended_dim - 1) / config.extended_dim) * m;
            ext.assign(ext_codes.begin() + static_cast<std::ptrdiff_t>(ext_offset[l] * m),
                       ext_codes.begin() + static_cast<std::ptrdiff_t>(ext_offset[l] * m + count));
        }
        const unsigned scale_bits = pvq_base ? 0u : config.row_scale_bits;
        model.matrices.emplace_back(s.rows, s.cols, books, s.ref, scale_bits, std::move(s.scale_codes), std::move(perm),
                                    m > 0 ? s.critical : 0, std::move(codes), std::move(s.pvq), std::move(ext));
    }
    return model;
}

// One matrix with its own codebooks (h may be empty).
inline crvq_model crvq_quantize(std::span<const float> w, std::size_t rows, std::size_t cols,
                                std::span<const double> h, const crvq_config& config) {
    const crvq_layer layer{w, rows, cols, h};
    return crvq_quantize(std::span<const crvq_layer>(&layer, 1), config);
}

}  // namespace svq
