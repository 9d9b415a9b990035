// A weight matrix quantized with PVQ: quantize, dequantize, decode one row.
//
// Encoding one row x (cols weights, after the optional Hadamard rotation):
//   1. every group x_j of N columns is searched onto the pyramid P(N, K) (the
//      tail group onto P(tail, K_tail)): point y_j, unit direction
//      u_j = y_j / ||y_j||, least-squares gain g_j = <x_j, u_j> >= 0;
//   2. the row scale s = sqrt(sum_j g_j^2 / cols) makes the normalised gains
//      g_j / s a sample of sqrt(cols) * sqrt(Beta(N/2, (cols - N)/2)) for
//      Gaussian rows (their squares sum to cols), which is the density the
//      gain quantizer Q is optimal for (scale/lloyd_max.hpp);
//   3. codes c_j = Q(g_j / s) and s = sum g_j l_j / sum l_j^2 (l_j the level
//      of c_j) alternate a few times: the row error
//      sum_j (||x_j||^2 - g_j^2) + sum_j (g_j - s l_j)^2 falls at every step;
//   4. s is stored relative to the matrix reference scale (fp16 of s / ref,
//      or an 8-bit log code), and the codes are chosen once more for the
//      stored s, since that is what the decoder multiplies by.
// Decoding: x_j = s * l_j * y_j / ||y_j||, then the inverse rotation.
#pragma once

#include <svq/core/bitstream.hpp>
#include <svq/core/checks.hpp>
#include <svq/concepts.hpp>
#include <svq/core/half.hpp>
#include <svq/core/parallel.hpp>
#include <svq/core/wide_uint.hpp>
#include <svq/error.hpp>
#include <svq/format/layout.hpp>
#include <svq/format/row_format.hpp>
#include <svq/pvq/pulses.hpp>
#include <svq/pvq/search.hpp>
#include <svq/rotate/hadamard_rotation.hpp>
#include <svq/scale/lloyd_max.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace svq {

namespace detail {

// quantize's encoder of one row (steps 1-4 of the file comment) over a row
// format: the plain (MSE) search of every group, the row scale and the gain
// codes, written through the format's write_row.
template <class Format>
class mse_row_encoder {
public:
    mse_row_encoder(const Format& format, const search_options& search) : f_(format), search_(search) {}

    // Points y (cols ints) and gain codes (groups()) of x (cols floats, already
    // rotated, finite); returns the row scale code. Throws svq::overflow_error
    // when the row scale is outside the range of the format's row scale codes
    // (row_scale_codec::represents), naming `row` and the scale relative to
    // the reference: clamped or rounded to zero, it would destroy the row.
    std::uint32_t plan_row(const float* x, int* y, std::uint32_t* codes, std::size_t row) const {
        const std::size_t groups = f_.groups();
        std::vector<double> gains(groups);
        search_row(x, y, gains.data());
        double energy = 0.0;
        for (std::size_t j = 0; j < groups; ++j) energy += gains[j] * gains[j];
        double s = std::sqrt(energy / static_cast<double>(f_.layout().cols));
        if (s > 0.0) {
            for (int pass = 0; pass < 3; ++pass) {
                double gl = 0.0, ll = 0.0;
                for (std::size_t j = 0; j < groups; ++j) {
                    codes[j] = f_.gain_code(j, gains[j] / s);
                    const double level = f_.gain_level(j, codes[j]);
                    gl += gains[j] * level;
                    ll += level * level;
                }
                if (!(gl > 0.0)) break;
                s = gl / ll;
            }
        }
        if (s > 0.0 && !f_.scales().represents(s)) throw scale_out_of_range(row, s);
        const std::uint32_t scale_code = f_.scales().encode(s);
        const double stored = f_.scales().decode(scale_code);
        for (std::size_t j = 0; j < groups; ++j) codes[j] = stored > 0.0 ? f_.gain_code(j, gains[j] / stored) : 0;
        return scale_code;
    }

    // The row scale code plan_row gives x (row `row`; throws as plan_row).
    std::uint32_t row_scale_code(const float* x, std::size_t row) const {
        std::vector<int> y(f_.layout().cols);
        std::vector<std::uint32_t> codes(f_.groups());
        return plan_row(x, y.data(), codes.data(), row);
    }

    // plan_row for a given row scale code (requantize): the points of
    // plan_row's search, each gain code the nearest level to the optimal gain
    // over the decoded scale. Returns scale_code.
    std::uint32_t plan_row_with_scale(const float* x, std::uint32_t scale_code, int* y, std::uint32_t* codes) const {
        std::vector<double> gains(f_.groups());
        search_row(x, y, gains.data());
        const double stored = f_.scales().decode(scale_code);
        for (std::size_t j = 0; j < gains.size(); ++j)
            codes[j] = stored > 0.0 ? f_.gain_code(j, gains[j] / stored) : 0;
        return scale_code;
    }

    // Each group's point (y: cols ints) and optimal gain (gains: groups()).
    void search_row(const float* x, int* y, double* gains) const {
        const matrix_layout& l = f_.layout();
        std::vector<double> scratch(pvq_search_scratch_size(l.group_dim));
        for (std::size_t j = 0; j < f_.groups(); ++j) {
            const std::size_t first = j * l.group_dim, dim = f_.group_dim(j);
            pvq_search_dispatch(x + first, nullptr, dim, static_cast<int>(f_.group_pulses(j)), y + first, search_,
                                scratch.data());
            gains[j] = optimal_gain(x + first, y + first, dim);
        }
    }

private:
    overflow_error scale_out_of_range(std::size_t row, double s) const {
        const row_scale_codec& c = f_.scales();
        const unsigned bits = c.bits;
        return overflow_error(fmt::format(
            "row {}: its scale is {:.4g} times the matrix reference scale (the largest row RMS), outside the range "
            "{:.4g} .. {:.4g} of {}-bit row scales; {}",
            row, s / static_cast<double>(c.ref), row_scale_codec::smallest_relative(bits),
            row_scale_codec::largest_relative(bits), bits,
            bits == 16 ? "scale the row up or quantize it apart from the larger rows"
                       : "use row_scale_bits = 16 (fp16 row scales reach 2^-22 of the reference)"));
    }

    const Format& f_;
    search_options search_;
};

// The power of two 2^e the encoders divide a matrix of largest magnitude
// `peak` by: e = 0 up to 2^64, where no float sum over a row (the Hadamard
// rotation's stages, a dense factor's products) can overflow; above it, the
// e that brings peak into [0.5, 1). Division by a power of two is exact (down
// to float subnormals, far below anything the row scales keep), and every
// step of the encoders is homogeneous in the weights, so the divided matrix
// gets the same points, gain codes and row scale codes relative to its own
// reference scale; the reference scale of the result is that one times 2^e.
inline int prescale_exponent(float peak) noexcept {
    if (!(peak > 0x1p64f)) return 0;
    return std::ilogb(peak) + 1;
}

// The matrix divided by 2^e (prescale_exponent).
inline std::vector<float> prescaled(std::span<const float> w, int e) {
    std::vector<float> out(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) out[i] = std::ldexp(w[i], -e);
    return out;
}

// Matrix reference scale: the largest row RMS (row scales are stored relative to it).
inline float reference_scale(std::span<const float> w, std::size_t rows, std::size_t cols) {
    const std::vector<double> rms = row_rms(w, rows, cols);
    const double largest = rms.empty() ? 0.0 : *std::max_element(rms.begin(), rms.end());
    if (!(largest <= static_cast<double>(std::numeric_limits<float>::max())))
        throw invalid_argument(fmt::format("row RMS {} does not fit in a float", largest));
    return static_cast<float>(largest);
}

}  // namespace detail

// The packed matrix: one bitstream of rows (format/row_format.hpp), the
// reference scale and the rotation seed. Format: the row format (its shape
// code and gain quantizers); quantized_matrix is format version 3.
template <class Format = row_format>
class basic_quantized_matrix {
public:
    using format_type = Format;
    using gains_type = typename Format::gains_type;

    basic_quantized_matrix() = default;

    // Rebuilds a matrix from its stored parts (what a file reader has).
    // Throws svq::invalid_argument for a bad configuration and svq::corrupt_data
    // when words has the wrong length or the reference scale is not finite and
    // >= 0; a bad index or scale code inside a row throws svq::corrupt_data when
    // that row is decoded.
    basic_quantized_matrix(std::size_t rows, std::size_t cols, const matrix_config& config, float reference_scale,
                           std::vector<std::uint64_t> words, const gains_type& gains = {})
        : basic_quantized_matrix(rows, cols, config, reference_scale, own(std::move(words)), gains) {}
    // The same over words that stay where they are (a mapped file's): `words`
    // must stay valid while `keep` (e.g. the file's mapping) is held, and the
    // matrix and its copies hold it.
    basic_quantized_matrix(std::size_t rows, std::size_t cols, const matrix_config& config, float reference_scale,
                           std::span<const std::uint64_t> words, std::shared_ptr<const void> keep,
                           const gains_type& gains = {})
        : basic_quantized_matrix(rows, cols, config, reference_scale, shared_words{words, std::move(keep)}, gains) {}
    // The same from a format already built (an encoder's).
    basic_quantized_matrix(std::shared_ptr<const Format> format, const matrix_config& config,
                           std::vector<std::uint64_t> words)
        : config_(config), format_(std::move(format)) {
        set_words(own(std::move(words)));
        if (config_.rotate) rotation_ = std::make_shared<const hadamard_rotation>(cols(), config_.seed);
    }

private:
    // Words and what keeps them alive (an owned vector or a mapped file).
    struct shared_words {
        std::span<const std::uint64_t> words;
        std::shared_ptr<const void> keep;
    };
    static shared_words own(std::vector<std::uint64_t> words) {
        auto v = std::make_shared<const std::vector<std::uint64_t>>(std::move(words));
        return {std::span<const std::uint64_t>(*v), v};
    }
    void set_words(shared_words w) {
        if (w.words.size() != layout().payload_words())
            throw corrupt_data(fmt::format("quantized matrix {} x {} ({}) needs {} words of payload, got {}", rows(),
                                           cols(), to_string(config_), layout().payload_words(), w.words.size()));
        words_ = w.words;
        keep_ = std::move(w.keep);
    }
    basic_quantized_matrix(std::size_t rows, std::size_t cols, const matrix_config& config, float reference_scale,
                           shared_words words, const gains_type& gains)
        : config_(config) {
        const matrix_layout layout = make_layout(rows, cols, config);
        if (words.words.size() != layout.payload_words())
            throw corrupt_data(fmt::format("quantized matrix {} x {} ({}) needs {} words of payload, got {}", rows,
                                           cols, to_string(config), layout.payload_words(), words.words.size()));
        if (!std::isfinite(reference_scale) || reference_scale < 0.0f)
            throw corrupt_data(fmt::format("reference scale {} is not finite and >= 0", reference_scale));
        format_ = std::make_shared<const Format>(layout, reference_scale, gains);
        set_words(std::move(words));
        if (config_.rotate) rotation_ = std::make_shared<const hadamard_rotation>(cols, config_.seed);
    }

public:

    std::size_t rows() const noexcept { return format_ ? layout().rows : 0; }
    std::size_t cols() const noexcept { return format_ ? layout().cols : 0; }
    const matrix_config& config() const noexcept { return config_; }
    const matrix_layout& layout() const noexcept {
        static const matrix_layout empty{};
        return format_ ? format_->layout() : empty;
    }
    // The writer and reader of the rows (shared by copies of the matrix; a
    // default-constructed matrix has none: rows() == 0).
    const Format& format() const noexcept { return *format_; }
    // The same, shared (what a matrix re-encoded in this format reuses).
    const std::shared_ptr<const Format>& shared_format() const noexcept { return format_; }
    // The Hadamard rotation of a rotated matrix, else null.
    const hadamard_rotation* rotation() const noexcept { return rotation_.get(); }
    float reference_scale() const noexcept { return format_ ? format_->scales().ref : 0.0f; }
    // The payload words (owned, or a mapped file's).
    std::span<const std::uint64_t> words() const noexcept { return words_; }
    // What keeps words() alive (copies of the matrix share it).
    const std::shared_ptr<const void>& words_owner() const noexcept { return keep_; }

    // Every stored bit: the payload words, the reference scale, the seed (when rotated).
    std::size_t stored_bits() const noexcept {
        return words_.size() * 64 + 32 + (config_.rotate ? 8 * sizeof(config_.seed) : 0);
    }
    double bits_per_weight() const noexcept {
        return static_cast<double>(stored_bits()) / static_cast<double>(rows() * cols());
    }

    // Row r (cols floats) in the original (unrotated) basis.
    void decode_row(std::size_t r, std::span<float> out) const {
        if (r >= rows()) throw invalid_argument(fmt::format("decode_row: row {} of a matrix of {} rows", r, rows()));
        if (out.size() != cols())
            throw invalid_argument(fmt::format("decode_row: output has {} entries, cols = {}", out.size(), cols()));
        row_buffers b = make_buffers();
        decode_original(r, out.data(), b);
    }

    // Rows first .. first + count - 1 (count * cols floats, row-major): a
    // matrix streamed through a small buffer, a block of rows at a time.
    void decode_rows(std::size_t first, std::size_t count, std::span<float> out) const {
        if (first > rows() || count > rows() - first)
            throw invalid_argument(
                fmt::format("decode_rows: rows {} .. {} of a matrix of {} rows", first, first + count, rows()));
        if (out.size() != count * cols())
            throw invalid_argument(fmt::format("decode_rows: output has {} entries, {} rows of {} need {}", out.size(),
                                               count, cols(), count * cols()));
        row_buffers b = make_buffers();
        for (std::size_t r = 0; r < count; ++r) decode_original(first + r, out.data() + r * cols(), b);
    }

    // All rows, row-major (rows * cols floats), split over `threads` (0: all
    // cores; the same floats whatever the count).
    void dequantize(std::span<float> out, unsigned threads = 1) const {
        if (out.size() != rows() * cols())
            throw invalid_argument(
                fmt::format("dequantize: output has {} entries, the matrix {} x {}", out.size(), rows(), cols()));
        detail::parallel_chunks(
            rows(), threads, detail::chunk_rows(rows(), threads), [&](std::size_t first, std::size_t last) {
                decode_rows(first, last - first, out.subspan(first * cols(), (last - first) * cols()));
            });
    }
    std::vector<float> dequantize() const {
        std::vector<float> out(rows() * cols());
        dequantize(out);
        return out;
    }

    // y = Wq x (x: cols floats, y: rows floats) without forming Wq: x is
    // rotated forward once and each row is sum_j factor_j <y_j, (R x)_j> over
    // its integer points (double sums). The reference product; matrix_decoder
    // (kernels/gemv.hpp) is the fast one for format version 3.
    void gemv(std::span<const float> x, std::span<float> y, unsigned threads = 1) const {
        gemv_batch(x, y, 1, threads);
    }
    // Y = Wq X for `batch` vectors: x: batch * cols (vector c at c * cols),
    // y: batch * rows (vector c at c * rows). Each row is decoded once.
    void gemv_batch(std::span<const float> x, std::span<float> y, std::size_t batch, unsigned threads = 1) const {
        detail::check_gemv_shapes(x.size(), y.size(), batch, rows(), cols(), "quantized_matrix::gemv");
        std::vector<float> xr(x.begin(), x.end());
        if (rotation_) rotation_->forward_rows(xr, batch);
        const matrix_layout& l = layout();
        detail::parallel_slices(rows(), threads, [&](std::size_t first, std::size_t end) {
            typename Format::buffers b = format_->make_buffers();
            std::vector<int> points(cols());
            std::vector<double> acc(batch);
            for (std::size_t r = first; r < end; ++r) {
                const double s = format_->read_fields(words_, r, b);
                format_->unrank_points(b.index.data(), b.tail_index.data(), points.data(), b.ws);
                std::fill(acc.begin(), acc.end(), 0.0);
                for (std::size_t j = 0; j < format_->groups(); ++j) {
                    const int* p = points.data() + j * l.group_dim;
                    const double f = format_->factor(s, j, format_->gain_level(j, b.codes[j]), p);
                    for (std::size_t c = 0; c < batch; ++c) {
                        const float* xc = xr.data() + c * cols() + j * l.group_dim;
                        double dot = 0.0;
                        for (std::size_t i = 0; i < format_->group_dim(j); ++i) dot += p[i] * static_cast<double>(xc[i]);
                        acc[c] += f * dot;
                    }
                }
                for (std::size_t c = 0; c < batch; ++c) y[c * rows() + r] = static_cast<float>(acc[c]);
            }
        });
    }

private:
    struct row_buffers {
        typename Format::buffers fields;
        std::vector<float> scratch;  // the rotation's
        std::vector<int> y;          // the row's points
        std::vector<double> levels;  // integer-stage rotation: gain levels and factors
        std::vector<float> factors;
    };
    row_buffers make_buffers() const {
        row_buffers b{format_->make_buffers(), {}, std::vector<int>(cols()), {}, {}};
        if (rotation_) b.scratch.resize(rotation_->scratch_size());
        if (integer_stages()) {
            b.levels.resize(layout().groups_per_row());
            b.factors.resize(layout().groups_per_row());
        }
        return b;
    }
    bool integer_stages() const noexcept { return detail::integer_stage_rotation(layout(), rotation_.get()); }
    // Row r in the original basis: decoded, then inverse-rotated (with the
    // integer-stage rotation where it applies, detail::integer_stage_inverse).
    void decode_original(std::size_t r, float* out, row_buffers& b) const {
        if (integer_stages()) {
            const double s = format_->read_points(words_, r, b.y.data(), b.levels.data(), b.fields);
            const std::size_t n = layout().group_dim;
            for (std::size_t j = 0; j < b.levels.size(); ++j)
                b.factors[j] = format_->factor(s, j, b.levels[j], b.y.data() + j * n, static_cast<double>(cols()));
            detail::integer_stage_inverse(b.y.data(), b.factors.data(), n, cols(), rotation_->signs().data(), out);
            if (format_->may_overflow()) detail::check_finite_row(out, cols(), r);
            return;
        }
        format_->decode_row(words_, r, out, b.y.data(), b.fields);
        if (rotation_) rotation_->inverse(std::span<float>(out, cols()), b.scratch);
        if (format_->may_overflow()) detail::check_finite_row(out, cols(), r);
    }

    matrix_config config_{};
    std::span<const std::uint64_t> words_;  // immutable, shared by copies
    std::shared_ptr<const void> keep_;
    std::shared_ptr<const Format> format_;
    std::shared_ptr<const hadamard_rotation> rotation_;
};

// Format version 3: the matrix quantize returns and every decoder reads.
using quantized_matrix = basic_quantized_matrix<row_format>;

namespace detail {

// The payload words of w (the format's rows x cols, row-major, checked): each
// row rotated first when config.rotate, then plan(r, row, y, codes) gives its
// points, gain codes and row scale code, and the format's writer appends it.
// Blocks of rows are planned over `threads` (0: all cores) and written in
// order, so the words do not depend on the count; progress(rows done, rows),
// when set, follows each block on the calling thread.
template <class Format, class Plan>
std::vector<std::uint64_t> encode_rows(const Format& format, std::span<const float> w, const matrix_config& config,
                                       unsigned threads, const std::function<void(std::size_t, std::size_t)>& progress,
                                       Plan&& plan) {
    const matrix_layout& l = format.layout();
    std::optional<hadamard_rotation> rotation;
    if (config.rotate) rotation.emplace(l.cols, config.seed);
    const std::size_t rows = l.rows, cols = l.cols, groups = l.groups_per_row();
    const unsigned t = thread_count(threads);
    const std::size_t block = t == 1 ? 1 : 64 * std::size_t{t};
    std::vector<int> points(block * cols);
    std::vector<std::uint32_t> codes(block * groups), scale_codes(block);
    bit_writer out;
    out.reserve_words(l.payload_words());
    for (std::size_t r0 = 0; r0 < rows; r0 += block) {
        const std::size_t n = std::min(block, rows - r0);
        // Chunks of 8 rows handed to whichever thread is free (parallel_chunks):
        // on cores of unequal speed equal halves would wait for the slower one.
        struct worker {
            std::vector<float> row, scratch;
        };
        const auto init = [&] {
            return worker{std::vector<float>(cols), std::vector<float>(rotation ? rotation->scratch_size() : 0)};
        };
        parallel_chunks(n, t, 8, init, [&](worker& wk, std::size_t first, std::size_t end) {
            std::vector<float>& row = wk.row;
            std::vector<float>& scratch = wk.scratch;
            for (std::size_t i = first; i < end; ++i) {
                std::copy_n(w.data() + (r0 + i) * cols, cols, row.data());
                if (rotation) rotation->forward(row, scratch);
                scale_codes[i] = plan(r0 + i, static_cast<const float*>(row.data()), points.data() + i * cols,
                                      codes.data() + i * groups);
            }
        });
        for (std::size_t i = 0; i < n; ++i)
            format.write_row(scale_codes[i], points.data() + i * cols, codes.data() + i * groups, out);
        if (progress) progress(r0 + n, rows);
    }
    return std::move(out).take();
}

}  // namespace detail

namespace detail {

// Overwrites `count` bits (<= 64) at bit `offset` of words with value's low bits.
inline void overwrite_bits(std::vector<std::uint64_t>& words, std::size_t offset, std::size_t count,
                           std::uint64_t value) noexcept {
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint64_t bit = std::uint64_t{1} << ((offset + i) % 64);
        std::uint64_t& word = words[(offset + i) / 64];
        word = ((value >> i) & 1) != 0 ? (word | bit) : (word & ~bit);
    }
}

// For a matrix encoded divided by 2^shift (prescale_exponent > 0): q has the
// payload and the full reference scale, `scaled` the same payload against
// the encoder's reference scale (its rows decode to finite values). Weights
// near FLT_MAX can reconstruct past it (the quantization error adds to
// them), so every row of q that decodes to a non-finite value gets a lower
// row scale code: first the one that brings its largest decoded magnitude
// (measured on `scaled`) to FLT_MAX, then one code lower at a time until the
// row is finite. Other rows keep their bits. Throws svq::overflow_error when
// no code but zero makes the row finite.
template <class Format>
basic_quantized_matrix<Format> fit_float_range(basic_quantized_matrix<Format> q,
                                               const basic_quantized_matrix<Format>& scaled, int shift) {
    // A row past the float range is corrupt_data from the decoder (the format may_overflow()).
    const auto finite_row = [&](const basic_quantized_matrix<Format>& m, std::size_t r, std::vector<float>& row) {
        try {
            m.decode_row(r, row);
        } catch (const corrupt_data&) {
            return false;
        }
        return std::all_of(row.begin(), row.end(), [](float v) { return std::isfinite(v); });
    };
    std::vector<float> row(q.cols());
    std::vector<std::size_t> overflowing;
    for (std::size_t r = 0; r < q.rows(); ++r)
        if (!finite_row(q, r, row)) overflowing.push_back(r);
    if (overflowing.empty()) return q;
    const Format& format = q.format();
    const row_scale_codec& codec = format.scales();
    const std::size_t bits = format.layout().row_scale_bits;
    std::vector<std::uint64_t> words(q.words().begin(), q.words().end());
    for (bool first = true; !overflowing.empty(); first = false) {
        for (const std::size_t r : overflowing) {
            const std::size_t offset = format.layout().row_bit_offset(r);
            const std::uint32_t code = format.read_scale_code(words, r);
            std::uint32_t lower = code > 0 ? code - 1 : 0;
            if (first && code > 0) {
                scaled.decode_row(r, row);
                double peak = 0.0;
                for (const float v : row) peak = std::max(peak, std::fabs(static_cast<double>(v)));
                const double fit = codec.decode(code) *
                                   (static_cast<double>(std::numeric_limits<float>::max()) / std::ldexp(peak, shift));
                lower = std::min(lower, codec.encode(fit));
            }
            if (lower == 0)
                throw overflow_error(fmt::format(
                    "row {}: no row scale code decodes it to finite floats (its largest weight is near {:g})", r,
                    static_cast<double>(std::numeric_limits<float>::max())));
            overwrite_bits(words, offset, bits, lower);
        }
        q = basic_quantized_matrix<Format>(q.shared_format(), q.config(), words);
        std::erase_if(overflowing, [&](std::size_t r) { return finite_row(q, r, row); });
    }
    return q;
}

}  // namespace detail

// The plain search (MatrixSearch, concepts.hpp): every row independently,
// each group's point by the MSE search (pvq/search.hpp, config.search), the
// row scale and gain codes as in the file comment. Rows are split over `threads` (0: all
// cores; the result does not depend on it); progress(rows done, rows), when
// set, is called after each block of rows on the calling thread.
struct mse_search {
    unsigned threads = 1;
    std::function<void(std::size_t, std::size_t)> progress{};

    template <class Format>
    std::vector<std::uint64_t> encode(const Format& format, std::span<const float> w, const matrix_config& config) const {
        const detail::mse_row_encoder<Format> encoder(format, config.search);
        return detail::encode_rows(format, w, config, threads, progress,
                                   [&](std::size_t r, const float* row, int* y, std::uint32_t* codes) {
                                       return encoder.plan_row(row, y, codes, r);
                                   });
    }
};

// The matrix codec: w (row-major rows x cols) quantized with an explicit
// configuration in the row format Format (its shape code and gain quantizers,
// `gains`), the rows chosen by `search` (plain MSE: mse_search; Hessian-
// weighted: hessian_search, hessian/gptq.hpp; or any MatrixSearch).
// Throws svq::invalid_argument for an empty or ragged shape, a non-finite
// weight (naming its row, column and value) or a bad configuration, and
// svq::overflow_error when the index of (N, K) needs more than 1024 bits.
template <class Format = row_format, class Search = mse_search>
    requires MatrixSearch<Search, Format>
basic_quantized_matrix<Format> quantize_with(std::span<const float> w, std::size_t rows, std::size_t cols,
                                             const matrix_config& config, const Search& search = {},
                                             const typename Format::gains_type& gains = {}) {
    const float peak = detail::check_matrix(w, rows, cols, "quantize");
    const matrix_layout layout = make_layout(rows, cols, config);
    const int shift = detail::prescale_exponent(peak);
    if (shift == 0) {
        const float ref = detail::reference_scale(w, rows, cols);
        auto format = std::make_shared<const Format>(layout, ref, gains);
        std::vector<std::uint64_t> words = search.encode(*format, w, config);
        return basic_quantized_matrix<Format>(std::move(format), config, std::move(words));
    }
    // Magnitudes where float sums overflow: encoded divided by 2^shift, the
    // reference scale multiplied back (detail::prescale_exponent).
    const std::vector<float> ws = detail::prescaled(w, shift);
    const float scaled_ref = detail::reference_scale(ws, rows, cols);
    auto scaled_format = std::make_shared<const Format>(layout, scaled_ref, gains);
    std::vector<std::uint64_t> words = search.encode(*scaled_format, std::span<const float>(ws), config);
    const basic_quantized_matrix<Format> scaled(std::move(scaled_format), config, words);
    auto format = std::make_shared<const Format>(layout, std::ldexp(scaled_ref, shift), gains);
    return detail::fit_float_range(basic_quantized_matrix<Format>(std::move(format), config, std::move(words)), scaled,
                                   shift);
}

// quantize_with's plain search in format version 3.
inline quantized_matrix quantize(std::span<const float> w, std::size_t rows, std::size_t cols,
                                 const matrix_config& config) {
    return quantize_with(w, rows, cols, config, mse_search{});
}

inline std::vector<float> dequantize(const quantized_matrix& q) { return q.dequantize(); }

// Encodes w (rows x cols, row-major, finite) in the format of `like`: the same
// configuration, reference scale and row scales (their stored codes, so the
// same bits), with every group's point and gain code chosen again for w
// (quantize's search; the gain code nearest the optimal gain over the stored
// row scale). For quantization-aware fine-tuning, which keeps latent weights
// and encodes them again at every step, and for re-encoding an edited matrix.
// Throws svq::invalid_argument for a shape other than like's or a non-finite
// weight, svq::overflow_error for a weight above 2^64 in magnitude (the
// rotation and search of requantize run unscaled; quantize handles those).
template <class Format>
basic_quantized_matrix<Format> requantize(const basic_quantized_matrix<Format>& like, std::span<const float> w) {
    const float peak = detail::check_matrix(w, like.rows(), like.cols(), "requantize");
    if (detail::prescale_exponent(peak) != 0)
        throw overflow_error(fmt::format("requantize: a weight of magnitude {} exceeds 2^64; quantize the matrix "
                                         "again instead (quantize scales such matrices exactly)", peak));
    const Format& format = like.format();
    const detail::mse_row_encoder<Format> encoder(format, like.config().search);
    std::vector<std::uint64_t> words =
        detail::encode_rows(format, w, like.config(), 1, {}, [&](std::size_t r, const float* row, int* y, std::uint32_t* codes) {
            return encoder.plan_row_with_scale(row, format.read_scale_code(like.words(), r), y, codes);
        });
    return basic_quantized_matrix<Format>(like.shared_format(), like.config(), std::move(words));
}

}  // namespace svq
