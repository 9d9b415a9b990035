// CRVQ: channel-relaxed vector quantization (arXiv 2412.09282), as a template
// over its base: codebook_base<C> (a vector codebook C, k-means by default:
// kmeans_base) or pvq_base (svq's PVQ codec). docs/crvq.md has the method,
// the API and the bit accounting.
//
// For each matrix W (rows x cols; input channels are columns):
//  1. base: a codebook C0 (vectors of base.dim consecutive columns of a row,
//     2^base.bits entries; C::fit, weighted k-means for kmeans_codebook) or
//     svq's PVQ codec (Hessian PVQ when H is given, hessian/gptq.hpp);
//  2. importance of input channel j from the base residual and diag H:
//     I_j = mean_i (W_ij - Q(W)_ij)^2 H_jj; channels sorted by decreasing
//     importance, the first lambda * cols (rounded, at least 1) are critical;
//  3. codebook base with base.permute: the columns are reordered by importance
//     and C0 is refitted (from the old codebook) and re-encoded in that order;
//     the whole permutation is stored (cols * ceil(log2 cols) bits). Without
//     it (and always with the PVQ base, whose rotation mixes the channels
//     anyway) only the critical channels' indices are stored;
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
// their bits are counted once for the model. One call per matrix gives
// per-matrix codebooks.
//
// A base B is a type that holds its own options and meets CrvqBase: the
// driver (crvq_quantize) calls b.check(), b.scale_bits(), b.fit(...) and
// b.reorder(...); a stored matrix (crvq_matrix<B>) needs only CrvqStoredBase:
// B::validate, B::stored_bits, B::dequantize and B::gemv_batch over the
// matrix's part of the base (B::matrix_type) and the shared part
// (B::shared_type, e.g. the base codebook).
#pragma once

#include <svq/core/parallel.hpp>
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
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace svq {

// One matrix to quantize: w rows x cols row-major; h cols x cols row-major or
// empty (plain MSE). Pass a damped H (the PVQ base's Hessian search needs it
// positive definite); only its diagonal steers the codebooks.
struct crvq_layer {
    std::span<const float> w;
    std::size_t rows = 0, cols = 0;
    std::span<const double> h;
};

// The working state of one layer inside crvq_quantize, what the driver and
// the base's fit / reorder share.
struct crvq_layer_state {
    std::size_t rows = 0, cols = 0;
    const float* w = nullptr;   // rows x cols, row-major
    std::vector<double> hdiag;  // H_jj (1 without H), cols
    float ref = 0.0f;           // one fp32 scale (the matrix RMS) or the row scales' reference
    std::vector<std::uint32_t> scale_codes;  // rows codes when the base's scale_bits() > 0
    std::vector<double> s;                   // s_r: the decoded row scales, rows
    double norm = 1.0;                       // sum_ij H_jj W_ij^2 / (rows cols): vector weights are divided by it
    // Position -> original column of the base's vectors: the identity unless
    // reorder() set it (and `permuted`), then stored whole.
    std::vector<std::uint32_t> order;
    bool permuted = false;
    std::vector<std::uint32_t> importance;  // columns by decreasing importance (set before reorder())
    std::size_t critical = 0;               // critical channel count
    std::vector<float> base;                // the base's reconstruction (fit / reorder), original units and order
};

// What a stored matrix tells its base's decoder.
struct crvq_base_view {
    std::size_t rows = 0, cols = 0;
    std::span<const std::uint32_t> order;  // position -> column of the base's vectors; empty: the identity
    std::span<const double> scales;        // s_r, rows values (the base's codewords are in units of s_r)
};

// The stored form of a CRVQ base: B::matrix_type (each matrix's part),
// B::shared_type (what the matrices of one model share, with stored_bits()),
// and, with shared == nullptr when the model has no shared part:
//   B::validate(part, shared, view)        throws svq::corrupt_data when the parts do not fit
//   B::stored_bits(part, shared)           the matrix's own bits of the base
//   B::dequantize(part, shared, view, out) out (rows * cols) = the base reconstruction
//   B::gemv_batch(part, shared, view, x, y, batch, threads)  y = base x for `batch` vectors
template <class B>
concept CrvqStoredBase =
    requires {
        typename B::shared_type;
        typename B::matrix_type;
    } && std::default_initializable<typename B::matrix_type> && std::copy_constructible<typename B::matrix_type> &&
    requires(const typename B::matrix_type& part, const typename B::shared_type* shared, const crvq_base_view& view,
             std::span<float> out, std::span<const float> x, std::size_t batch, unsigned threads) {
        { shared->stored_bits() } -> std::convertible_to<std::size_t>;
        B::validate(part, shared, view);
        { B::stored_bits(part, shared) } -> std::convertible_to<std::size_t>;
        B::dequantize(part, shared, view, out);
        B::gemv_batch(part, shared, view, x, out, batch, threads);
    };

// A base crvq_quantize can quantize with: a CrvqStoredBase whose value holds
// its options and
//   b.check()            throws svq::invalid_argument for a bad option
//   b.scale_bits()       bits of a stored row scale (0: one fp32 scale per matrix)
//   b.fit(layers, states, parts, kmeans, refine_rounds, threads) -> optional<shared_type>
//                        quantizes every layer: parts[l] and states[l].base
//   b.reorder(states, parts, shared, kmeans, refine_rounds)
//                        after the channels are ranked (extended codebooks on):
//                        may set states[l].order / permuted and requantize.
template <class B>
concept CrvqBase =
    CrvqStoredBase<B> && std::copy_constructible<B> &&
    requires(const B& b, std::span<const crvq_layer> layers, std::span<crvq_layer_state> states,
             std::span<typename B::matrix_type> parts, std::optional<typename B::shared_type>& shared,
             const kmeans_options& kmeans, unsigned refine_rounds, unsigned threads) {
        b.check();
        { b.scale_bits() } -> std::convertible_to<unsigned>;
        { b.fit(layers, states, parts, kmeans, refine_rounds, threads) } -> std::same_as<std::optional<typename B::shared_type>>;
        b.reorder(states, parts, shared, kmeans, refine_rounds);
    };

// A Codebook that codebook_base can fit and encode with the vector weights of
// codebook.hpp: C::fit(x, w, bits, kmeans, init) -> a codebook of 2^bits
// entries for the rows of x (weights w; init: the previous fit, or null), and
// encode(x, w, codes): the entry nearest to each row of x under its weights.
template <class C>
concept FittableCodebook =
    Codebook<C> && requires(const C& c, const vector_block& x, const vector_block& w, unsigned bits,
                            const kmeans_options& kmeans, const C* init, std::span<std::uint32_t> codes) {
        { C::fit(x, w, bits, kmeans, init) } -> std::same_as<C>;
        c.encode(x, w, codes);
    };

namespace detail {

// Bits of one column index: ceil(log2 cols).
inline unsigned column_index_bits(std::size_t cols) noexcept {
    return cols <= 1 ? 0u : static_cast<unsigned>(std::bit_width(cols - 1));
}

// Entry `code` of c (dim floats): c.entry(code) where c has it, else decoded into buf.
template <class C>
    requires Codebook<C>
const float* codebook_entry(const C& c, std::uint32_t code, std::span<float> buf) {
    if constexpr (requires {
                      { c.entry(code) } -> std::convertible_to<const float*>;
                  }) {
        return c.entry(code);
    } else {
        c.decode(code, buf);
        return buf.data();
    }
}

// Base vectors of every layer (rows * ceil(cols / d) each, in s.order), normalised values and weights;
// returns each layer's first row in the pool.
inline std::vector<std::size_t> base_pool(std::span<const crvq_layer_state> states, std::size_t d, vector_block& x,
                                          vector_block& w) {
    std::vector<std::size_t> offset(states.size());
    std::size_t n = 0;
    for (std::size_t l = 0; l < states.size(); ++l) {
        offset[l] = n;
        n += states[l].rows * ((states[l].cols + d - 1) / d);
    }
    x.setZero(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(d));
    w.setZero(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(d));
    for (std::size_t l = 0; l < states.size(); ++l) {
        const crvq_layer_state& s = states[l];
        const std::size_t per_row = (s.cols + d - 1) / d;
        for (std::size_t r = 0; r < s.rows; ++r) {
            const double inv = s.s[r] > 0.0 ? 1.0 / s.s[r] : 0.0;
            for (std::size_t p = 0; p < s.cols; ++p) {
                const std::size_t j = s.order[p];
                const auto i = static_cast<Eigen::Index>(offset[l] + r * per_row + p / d);
                const auto k = static_cast<Eigen::Index>(p % d);
                x(i, k) = static_cast<float>(s.w[r * s.cols + j] * inv);
                w(i, k) = static_cast<float>(s.s[r] * s.s[r] * s.hdiag[j] / s.norm);
            }
        }
    }
    return offset;
}

}  // namespace detail

// The base is a vector codebook C shared by the matrices of one call: each
// row of a matrix, divided by its scale s_r, in vectors of `dim` consecutive
// columns (in base order; the tail vector of a row padded with weight-0
// coordinates), each stored as the code of an entry (code_bits() bits).
// Quantizing needs FittableCodebook<C>: C::fit on the pooled vectors of every
// layer, then encode; for kmeans_codebook also `refine_rounds` rounds of
// least-squares refit (refine_least_squares) and re-encoding. Decoding needs
// only Codebook<C>.
template <class C = kmeans_codebook>
    requires Codebook<C>
struct codebook_base {
    using shared_type = C;
    using matrix_type = std::vector<std::uint32_t>;  // rows * ceil(cols / dim) codes, row-major, base order

    std::size_t dim = 8;  // vector dimension (C::fit must return a codebook of this dim())
    unsigned bits = 8;    // 2^bits entries
    // 0: one fp32 scale per matrix (its RMS); 8 or 16: a row scale per row
    // (detail::row_scale_codec, relative to the largest row RMS).
    unsigned row_scale_bits = 0;
    bool permute = true;  // base vectors in importance order (the whole permutation stored)

    void check() const {
        if (dim == 0) throw invalid_argument("crvq: base.dim = 0 must be >= 1");
        if (bits == 0 || bits > 16)
            throw invalid_argument(fmt::format("crvq: base.bits = {} must be in [1, 16]", bits));
        if (row_scale_bits != 0 && row_scale_bits != 8 && row_scale_bits != 16)
            throw invalid_argument(fmt::format("crvq: base.row_scale_bits = {} must be 0, 8 or 16", row_scale_bits));
    }
    unsigned scale_bits() const noexcept { return row_scale_bits; }

    std::optional<C> fit(std::span<const crvq_layer>, std::span<crvq_layer_state> states, std::span<matrix_type> parts,
                         const kmeans_options& kmeans, unsigned refine_rounds, unsigned /*threads*/) const
        requires FittableCodebook<C>
    {
        return fit_codes(states, parts, kmeans, refine_rounds, nullptr);
    }

    // With `permute`: the base vectors run over the columns in importance order
    // (matrices whose every column is critical keep theirs), refitted from the old codebook.
    void reorder(std::span<crvq_layer_state> states, std::span<matrix_type> parts, std::optional<C>& shared,
                 const kmeans_options& kmeans, unsigned refine_rounds) const
        requires FittableCodebook<C>
    {
        if (!permute) return;
        for (crvq_layer_state& s : states)
            if (s.critical < s.cols) {
                s.order = s.importance;
                s.permuted = true;
            }
        shared = fit_codes(states, parts, kmeans, refine_rounds, shared ? &*shared : nullptr);
    }

    static void validate(const matrix_type& codes, const C* book, const crvq_base_view& v) {
        if (book == nullptr) throw corrupt_data("crvq_matrix: no base codebook");
        const std::size_t d = book->dim(), need = v.rows * ((v.cols + d - 1) / d);
        if (codes.size() != need)
            throw corrupt_data(fmt::format("crvq_matrix: {} base codes, {} x {} with d = {} needs {}", codes.size(),
                                           v.rows, v.cols, d, need));
        for (const std::uint32_t c : codes)
            if (c >= book->entries())
                throw corrupt_data(fmt::format("crvq_matrix: base code {} of {} entries", c, book->entries()));
    }

    static std::size_t stored_bits(const matrix_type& codes, const C* book) noexcept {
        return book ? codes.size() * book->code_bits() : 0;
    }

    // out[r, order[p]] = s_r * entry(code of r, p / d)[p % d].
    static void dequantize(const matrix_type& codes, const C* book, const crvq_base_view& v, std::span<float> out) {
        const std::size_t d = book->dim(), per_row = (v.cols + d - 1) / d;
        std::vector<float> buf(d);
        for (std::size_t r = 0; r < v.rows; ++r) {
            float* row = out.data() + r * v.cols;
            const auto sr = static_cast<float>(v.scales[r]);
            for (std::size_t u = 0; u < per_row; ++u) {
                const float* e = detail::codebook_entry(*book, codes[r * per_row + u], buf);
                for (std::size_t k = 0, p = u * d; k < d && p < v.cols; ++k, ++p)
                    row[v.order.empty() ? p : v.order[p]] = sr * e[k];
            }
        }
    }

    // y[c * rows + r] = s_r * sum_p entry(...)[p % d] * x[c * cols + order[p]]: x gathered
    // into base order once, then one short dot per stored code and vector.
    static void gemv_batch(const matrix_type& codes, const C* book, const crvq_base_view& v, std::span<const float> x,
                           std::span<float> y, std::size_t batch, unsigned threads) {
        const std::size_t d = book->dim(), per_row = (v.cols + d - 1) / d;
        std::vector<float> xp(batch * v.cols);
        for (std::size_t c = 0; c < batch; ++c)
            for (std::size_t p = 0; p < v.cols; ++p)
                xp[c * v.cols + p] = x[c * v.cols + (v.order.empty() ? p : v.order[p])];
        detail::parallel_slices(v.rows, threads, [&](std::size_t first, std::size_t end) {
            std::vector<float> buf(d), acc(batch);
            for (std::size_t r = first; r < end; ++r) {
                std::fill(acc.begin(), acc.end(), 0.0f);
                for (std::size_t u = 0; u < per_row; ++u) {
                    const float* e = detail::codebook_entry(*book, codes[r * per_row + u], buf);
                    const std::size_t n = std::min(d, v.cols - u * d);
                    for (std::size_t c = 0; c < batch; ++c) {
                        const float* xs = xp.data() + c * v.cols + u * d;
                        float dot = 0.0f;
                        for (std::size_t k = 0; k < n; ++k) dot += e[k] * xs[k];
                        acc[c] += dot;
                    }
                }
                for (std::size_t c = 0; c < batch; ++c) y[c * v.rows + r] = static_cast<float>(v.scales[r]) * acc[c];
            }
        });
    }

private:
    // Fit (from `init` when given), encode, refine (kmeans_codebook), then the
    // codes of each layer and its base reconstruction.
    C fit_codes(std::span<crvq_layer_state> states, std::span<matrix_type> parts, const kmeans_options& kmeans,
                unsigned refine_rounds, const C* init) const
        requires FittableCodebook<C>
    {
        vector_block x, w;
        const std::vector<std::size_t> offset = detail::base_pool(states, dim, x, w);
        C c0 = C::fit(x, w, bits, kmeans, init);
        if (c0.dim() != dim)
            throw invalid_argument(
                fmt::format("crvq: the base codebook's fit returned dim {}, base.dim = {}", c0.dim(), dim));
        std::vector<std::uint32_t> codes(static_cast<std::size_t>(x.rows()), 0);
        c0.encode(x, w, std::span<std::uint32_t>(codes));
        if constexpr (std::same_as<C, kmeans_codebook>) {
            for (unsigned round = 0; round < refine_rounds; ++round) {
                refine_least_squares(std::span<kmeans_codebook>(&c0, 1), x, w, codes);
                c0.encode(x, w, codes);  // nearest entry: never worse than the codes it was refitted for
            }
        }
        for (std::size_t i = 0; i < codes.size(); ++i)
            if (codes[i] >= c0.entries())
                throw invalid_argument(fmt::format("crvq: the base codebook encoded vector {} as code {} of {} entries",
                                                   i, codes[i], c0.entries()));
        std::vector<float> buf(dim);
        for (std::size_t l = 0; l < states.size(); ++l) {
            crvq_layer_state& s = states[l];
            const std::size_t per_row = (s.cols + dim - 1) / dim, count = s.rows * per_row;
            parts[l].assign(codes.begin() + static_cast<std::ptrdiff_t>(offset[l]),
                            codes.begin() + static_cast<std::ptrdiff_t>(offset[l] + count));
            s.base.assign(s.rows * s.cols, 0.0f);
            for (std::size_t r = 0; r < s.rows; ++r)
                for (std::size_t u = 0; u < per_row; ++u) {
                    const float* e = detail::codebook_entry(c0, parts[l][r * per_row + u], buf);
                    for (std::size_t k = 0, p = u * dim; k < dim && p < s.cols; ++k, ++p)
                        s.base[r * s.cols + s.order[p]] = static_cast<float>(s.s[r] * e[k]);
                }
        }
        return c0;
    }
};

// The default base: a k-means codebook (codebook.hpp).
using kmeans_base = codebook_base<kmeans_codebook>;

// The base is svq's PVQ codec, one quantized_matrix per matrix (its own row
// scales; nothing shared, never permuted): Hessian PVQ (hessian/gptq.hpp)
// when the layer has H, else plain PVQ.
struct pvq_base {
    struct shared_type {  // nothing: a PVQ base shares no codebook
        std::size_t stored_bits() const noexcept { return 0; }
    };
    using matrix_type = quantized_matrix;

    // This configuration, or the best one at <= target_bpw (Hessian
    // choose_config when the layer has H, else the plain one).
    std::optional<matrix_config> config;
    double target_bpw = 1.0;
    auto_config_options search{};  // candidates choose_config tries
    gptq_options gptq{};

    void check() const {
        if (!config) detail::check_target(target_bpw);
    }
    unsigned scale_bits() const noexcept { return 0; }

    std::optional<shared_type> fit(std::span<const crvq_layer> layers, std::span<crvq_layer_state> states,
                                   std::span<matrix_type> parts, const kmeans_options&, unsigned,
                                   unsigned threads) const {
        for (std::size_t l = 0; l < layers.size(); ++l) {
            const crvq_layer& in = layers[l];
            parts[l] = quantize(in.w, in.rows, in.cols,
                                {.config = config,
                                 .target_bpw = config ? 0.0 : target_bpw,
                                 .hessian = in.h,
                                 .choice = search,
                                 .gptq = gptq,
                                 .threads = threads});
            states[l].base = parts[l].dequantize();
        }
        return std::nullopt;
    }
    void reorder(std::span<crvq_layer_state>, std::span<matrix_type>, std::optional<shared_type>&,
                 const kmeans_options&, unsigned) const noexcept {}

    static void validate(const quantized_matrix& q, const shared_type*, const crvq_base_view& v) {
        if (q.rows() != v.rows || q.cols() != v.cols)
            throw corrupt_data(
                fmt::format("crvq_matrix: PVQ base {} x {} for a {} x {} matrix", q.rows(), q.cols(), v.rows, v.cols));
        if (!v.order.empty())
            throw corrupt_data(
                fmt::format("crvq_matrix: a PVQ base with a stored permutation of {} columns", v.order.size()));
    }
    static std::size_t stored_bits(const quantized_matrix& q, const shared_type*) noexcept { return q.stored_bits(); }
    static void dequantize(const quantized_matrix& q, const shared_type*, const crvq_base_view&, std::span<float> out) {
        q.dequantize(out);
    }
    // The matrix's own product (quantized_matrix::gemv_batch).
    static void gemv_batch(const quantized_matrix& q, const shared_type*, const crvq_base_view&,
                           std::span<const float> x, std::span<float> y, std::size_t batch, unsigned threads) {
        q.gemv_batch(x, y, batch, threads);
    }
};

static_assert(CrvqBase<kmeans_base>);
static_assert(CrvqBase<pvq_base>);

// The options of one crvq_quantize call: the base's own (B, e.g.
// base.bits or base.target_bpw) and the ones every base shares.
template <class B>
    requires CrvqBase<B>
struct crvq_config {
    B base{};
    // Extended codebooks of the critical channels: vectors of extended_dim
    // consecutive rows of one critical column, 2^extended_bits entries each.
    std::size_t extended_codebooks = 3;
    std::size_t extended_dim = 8;
    unsigned extended_bits = 8;
    double critical_fraction = 0.02;  // lambda; 0 (or no extended codebooks): base only
    // Every k-means fit: the extended codebooks (a seed derived per codebook)
    // and a kmeans_codebook base.
    kmeans_options kmeans{};
    std::size_t beam_width = 4;
    unsigned refine_rounds = 2;  // rounds of (encode, least-squares refit) per k-means codebook set
    // The PVQ base's rows and the layers' beam searches are split over this
    // many threads (0: all cores); the result does not depend on it.
    unsigned threads = 1;
    // Called with (steps done, steps) on the calling thread: one step per
    // layer's base, per extended codebook fitted, per round of beam search.
    std::function<void(std::size_t, std::size_t)> progress{};
};

// The codebooks of one call, shared by its matrices.
template <class B>
    requires CrvqStoredBase<B>
struct crvq_codebooks {
    std::optional<typename B::shared_type> base;  // the base's shared part (codebook_base: its codebook)
    std::vector<kmeans_codebook> extended;        // C1..Cm
    std::size_t stored_bits() const noexcept {
        std::size_t bits = base ? base->stored_bits() : 0;
        for (const kmeans_codebook& c : extended) bits += c.stored_bits();
        return bits;
    }
};

// One quantized matrix. Its codebooks are shared (crvq_model); stored_bits()
// counts what is its own.
template <class B>
    requires CrvqStoredBase<B>
class crvq_matrix {
public:
    using base_type = B;
    using codebooks_type = crvq_codebooks<B>;

    crvq_matrix() = default;

    // From stored parts. permutation: cols entries (base in importance order)
    // or `critical` entries (the critical channels, most important first);
    // base: the matrix's part of the base (codebook_base: rows *
    // ceil(cols / dim) codes; pvq_base: its quantized_matrix); extended_codes:
    // critical * ceil(rows / extended_dim) * books->extended.size(), ordered
    // (channel, row block, codebook); row_scale_codes: rows codes when
    // row_scale_bits > 0. Throws svq::corrupt_data when a size does not match,
    // the permutation repeats or exceeds a column, or a code exceeds its codebook.
    crvq_matrix(std::size_t rows, std::size_t cols, std::shared_ptr<const codebooks_type> books, float reference_scale,
                unsigned row_scale_bits, std::vector<std::uint32_t> row_scale_codes,
                std::vector<std::uint32_t> permutation, std::size_t critical, typename B::matrix_type base,
                std::vector<std::uint32_t> extended_codes)
        : rows_(rows),
          cols_(cols),
          books_(std::move(books)),
          scales_{row_scale_bits, reference_scale},
          row_scale_codes_(std::move(row_scale_codes)),
          permutation_(std::move(permutation)),
          critical_(critical),
          base_(std::move(base)),
          extended_codes_(std::move(extended_codes)) {
        validate();
    }

    std::size_t rows() const noexcept { return rows_; }
    std::size_t cols() const noexcept { return cols_; }
    std::size_t critical_channels() const noexcept { return critical_; }
    bool base_permuted() const noexcept { return permutation_.size() == cols_ && cols_ > critical_; }
    // Position p -> original column (the first critical_channels() are the critical ones).
    std::span<const std::uint32_t> permutation() const noexcept { return permutation_; }
    // The matrix's part of the base (codebook_base: its codes; pvq_base: its quantized_matrix).
    const typename B::matrix_type& base_part() const noexcept { return base_; }
    std::span<const std::uint32_t> extended_codes() const noexcept { return extended_codes_; }
    std::span<const std::uint32_t> row_scale_codes() const noexcept { return row_scale_codes_; }
    const codebooks_type& codebooks() const noexcept { return *books_; }
    float reference_scale() const noexcept { return scales_.ref; }
    unsigned row_scale_bits() const noexcept { return scales_.bits; }

    // The matrix's own bits: fp32 reference scale, row scale codes, stored
    // permutation (ceil(log2 cols) bits an entry), the base's part (codes, or
    // the PVQ matrix's stored bits), extended codes. The shared codebooks are
    // not in it (crvq_model::stored_bits() adds them once).
    std::size_t stored_bits() const noexcept {
        return 32 + row_scale_codes_.size() * row_scale_bits() +
               permutation_.size() * detail::column_index_bits(cols_) + extended_codes_.size() * extended_bits() +
               B::stored_bits(base_, shared());
    }
    // stored_bits() / (rows * cols): without the shared codebooks.
    double bits_per_weight() const noexcept {
        return static_cast<double>(stored_bits()) / static_cast<double>(rows_ * cols_);
    }

    // out (rows * cols floats) = the matrix, row-major, original column order,
    // with the first `extended_used` extended codebooks (default: all). Throws
    // svq::invalid_argument for a wrong output size.
    void dequantize(std::span<float> out, std::size_t extended_used = static_cast<std::size_t>(-1)) const {
        if (out.size() != rows_ * cols_)
            throw invalid_argument(fmt::format("crvq_matrix::dequantize: output has {} entries, the matrix {} x {}",
                                               out.size(), rows_, cols_));
        const std::vector<double> s = scales();
        B::dequantize(base_, shared(), view(s), out);
        const std::size_t m = books_->extended.size();
        extended_used = std::min(extended_used, m);
        if (extended_used == 0 || critical_ == 0) return;
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
    }
    std::vector<float> dequantize(std::size_t extended_used = static_cast<std::size_t>(-1)) const {
        std::vector<float> out(rows_ * cols_);
        dequantize(out, extended_used);
        return out;
    }

    // y = Wq x. x: cols floats, y: rows floats.
    void gemv(std::span<const float> x, std::span<float> y, unsigned threads = 1) const {
        gemv_batch(x, y, 1, threads);
    }

    // Y = Wq X for `batch` vectors: x: batch * cols floats (vector c at c * cols),
    // y: batch * rows floats (vector c at c * rows). The base's product
    // (B::gemv_batch), then the critical columns' extended entries, without
    // forming Wq. Rows are split over `threads` (0: all cores); the result
    // does not depend on the count. Throws svq::invalid_argument for batch 0
    // or a wrong size.
    void gemv_batch(std::span<const float> x, std::span<float> y, std::size_t batch, unsigned threads = 1) const {
        if (batch == 0) throw invalid_argument("crvq_matrix::gemv_batch: batch = 0 must be >= 1");
        if (x.size() != batch * cols_)
            throw invalid_argument(fmt::format("crvq_matrix::gemv: x has {} entries, need {} ({} x {} columns)",
                                               x.size(), batch * cols_, batch, cols_));
        if (y.size() != batch * rows_)
            throw invalid_argument(fmt::format("crvq_matrix::gemv: y has {} entries, need {} ({} x {} rows)",
                                               y.size(), batch * rows_, batch, rows_));
        const std::vector<double> s = scales();
        B::gemv_batch(base_, shared(), view(s), x, y, batch, threads);
        const std::size_t m = books_->extended.size();
        if (m == 0 || critical_ == 0) return;
        const std::size_t de = books_->extended.front().dim(), blocks = (rows_ + de - 1) / de;
        detail::parallel_slices(rows_, threads, [&](std::size_t first, std::size_t end) {
            for (std::size_t c = 0; c < critical_; ++c) {
                const std::size_t j = permutation_[c];
                for (std::size_t r = first; r < end; ++r) {
                    const std::uint32_t* codes = extended_codes_.data() + (c * blocks + r / de) * m;
                    float add = 0.0f;
                    for (std::size_t b = 0; b < m; ++b) add += books_->extended[b].entry(codes[b])[r % de];
                    const auto v = static_cast<float>(s[r] * add);
                    for (std::size_t k = 0; k < batch; ++k) y[k * rows_ + r] += v * x[k * cols_ + j];
                }
            }
        });
    }

    // The scale s_i of row r's codewords (the matrix RMS without row scales).
    double row_scale(std::size_t r) const {
        return row_scale_codes_.empty() ? static_cast<double>(scales_.ref) : scales_.decode(row_scale_codes_[r]);
    }

private:
    const typename B::shared_type* shared() const noexcept { return books_->base ? &*books_->base : nullptr; }

    std::vector<double> scales() const {
        std::vector<double> s(rows_);
        for (std::size_t r = 0; r < rows_; ++r) s[r] = row_scale(r);
        return s;
    }

    crvq_base_view view(std::span<const double> s) const noexcept {
        const std::span<const std::uint32_t> order =
            base_permuted() ? std::span<const std::uint32_t>(permutation_) : std::span<const std::uint32_t>();
        return {rows_, cols_, order, s};
    }

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
        B::validate(base_, shared(), view({}));
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
    std::shared_ptr<const codebooks_type> books_;
    detail::row_scale_codec scales_{};
    std::vector<std::uint32_t> row_scale_codes_;
    std::vector<std::uint32_t> permutation_;
    std::size_t critical_ = 0;
    typename B::matrix_type base_{};
    std::vector<std::uint32_t> extended_codes_;
};

// The matrices of one call and their shared codebooks.
template <class B>
    requires CrvqStoredBase<B>
struct crvq_model {
    std::shared_ptr<const crvq_codebooks<B>> codebooks;
    std::vector<crvq_matrix<B>> matrices;

    std::size_t weights() const noexcept {
        std::size_t n = 0;
        for (const crvq_matrix<B>& m : matrices) n += m.rows() * m.cols();
        return n;
    }
    // Every matrix's own bits plus the shared codebooks once.
    std::size_t stored_bits() const noexcept {
        std::size_t bits = codebooks ? codebooks->stored_bits() : 0;
        for (const crvq_matrix<B>& m : matrices) bits += m.stored_bits();
        return bits;
    }
    double bits_per_weight() const noexcept {
        return static_cast<double>(stored_bits()) / static_cast<double>(weights());
    }
};

namespace detail {

template <class B>
std::size_t critical_count(const crvq_config<B>& c, std::size_t cols) {
    if (c.extended_codebooks == 0 || c.critical_fraction == 0.0) return 0;
    const auto n = static_cast<std::size_t>(std::llround(c.critical_fraction * static_cast<double>(cols)));
    return std::clamp<std::size_t>(n, 1, cols);
}

template <class B>
void check_crvq_config(const crvq_config<B>& c) {
    c.base.check();
    if (c.extended_dim == 0) throw invalid_argument("crvq: extended_dim = 0 must be >= 1");
    if (c.extended_codebooks > 0 && (c.extended_bits == 0 || c.extended_bits > 16))
        throw invalid_argument(fmt::format("crvq: extended_bits = {} must be in [1, 16]", c.extended_bits));
    if (!(c.critical_fraction >= 0.0 && c.critical_fraction <= 1.0))
        throw invalid_argument(fmt::format("crvq: critical_fraction = {} must be in [0, 1]", c.critical_fraction));
    if (c.beam_width == 0) throw invalid_argument("crvq: beam_width = 0 must be >= 1");
}

// Channels by decreasing I_j = mean_i (W_ij - B_ij)^2 H_jj (ties: lower index first).
inline void rank_channels(crvq_layer_state& s) {
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
inline Eigen::MatrixXd critical_target(const crvq_layer_state& s, std::span<const double> h) {
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

}  // namespace detail

// Quantizes every layer with shared codebooks, the base B with its options
// config.base. Throws svq::invalid_argument for no layers, a bad
// configuration, an empty or ragged matrix, a non-finite weight, or a Hessian
// of the wrong size or with a non-finite entry (and as the base's quantizer:
// C::fit, or the PVQ quantizers).
template <class B>
    requires CrvqBase<B>
crvq_model<B> crvq_quantize(std::span<const crvq_layer> layers, const crvq_config<B>& config) {
    detail::check_crvq_config(config);
    if (layers.empty()) throw invalid_argument("crvq_quantize: no layers");
    const unsigned scale_bits = config.base.scale_bits();
    std::vector<crvq_layer_state> states(layers.size());
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const crvq_layer& in = layers[l];
        crvq_layer_state& s = states[l];
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
    auto books = std::make_shared<crvq_codebooks<B>>();
    std::vector<typename B::matrix_type> parts(layers.size());
    const bool extend = std::any_of(states.begin(), states.end(), [](const crvq_layer_state& s) { return s.critical > 0; });

    // 1-3: base, importance, reordering.
    std::size_t step = 0;
    const std::size_t steps = layers.size() + (extend ? config.extended_codebooks + config.refine_rounds + 1 : 0);
    const auto report = [&] {
        if (config.progress) config.progress(++step, steps);
    };
    books->base = config.base.fit(layers, states, parts, config.kmeans, config.refine_rounds, config.threads);
    for (std::size_t l = 0; l < layers.size(); ++l) report();
    if (extend) {
        for (crvq_layer_state& s : states) detail::rank_channels(s);
        config.base.reorder(states, parts, books->base, config.kmeans, config.refine_rounds);
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
            const crvq_layer_state& s = states[l];
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
            const crvq_layer_state& s = states[l];
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
            report();
        }
        // Column-by-column beam search with feedback; leaves in x the targets each column was coded against.
        // Layers are independent here (their own rows of x and codes): over threads.
        const auto sequential = [&] {
            const std::span<const kmeans_codebook> cb(books->extended);
            detail::parallel_slices(states.size(), config.threads, [&](std::size_t l0, std::size_t l1) {
            for (std::size_t l = l0; l < l1; ++l) {
                const crvq_layer_state& s = states[l];
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
            });
        };
        for (unsigned round = 0; round <= config.refine_rounds; ++round) {
            sequential();
            if (round < config.refine_rounds) refine_least_squares(books->extended, x, w, ext_codes);
            report();
        }
    }

    // 5: assemble.
    crvq_model<B> model;
    model.codebooks = books;
    for (std::size_t l = 0; l < states.size(); ++l) {
        crvq_layer_state& s = states[l];
        std::vector<std::uint32_t> perm;
        if (s.permuted) perm = s.order;
        else if (s.critical > 0) perm.assign(s.importance.begin(), s.importance.begin() + static_cast<std::ptrdiff_t>(s.critical));
        std::vector<std::uint32_t> ext;
        if (m > 0) {
            const std::size_t count = s.critical * ((s.rows + config.extended_dim - 1) / config.extended_dim) * m;
            ext.assign(ext_codes.begin() + static_cast<std::ptrdiff_t>(ext_offset[l] * m),
                       ext_codes.begin() + static_cast<std::ptrdiff_t>(ext_offset[l] * m + count));
        }
        model.matrices.emplace_back(s.rows, s.cols, books, s.ref, scale_bits, std::move(s.scale_codes), std::move(perm),
                                    m > 0 ? s.critical : 0, std::move(parts[l]), std::move(ext));
    }
    return model;
}

// One matrix with its own codebooks (h may be empty).
template <class B>
    requires CrvqBase<B>
crvq_model<B> crvq_quantize(std::span<const float> w, std::size_t rows, std::size_t cols, std::span<const double> h,
                            const crvq_config<B>& config) {
    const crvq_layer layer{w, rows, cols, h};
    return crvq_quantize(std::span<const crvq_layer>(&layer, 1), config);
}

}  // namespace svq
