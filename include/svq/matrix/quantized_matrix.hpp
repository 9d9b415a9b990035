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
#include <svq/core/half.hpp>
#include <svq/core/wide_uint.hpp>
#include <svq/error.hpp>
#include <svq/format/split_index.hpp>
#include <svq/format/layout.hpp>
#include <svq/pvq/pulses.hpp>
#include <svq/pvq/search.hpp>
#include <svq/rotate/hadamard_rotation.hpp>
#include <svq/scale/lloyd_max.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace svq {

namespace detail {

template <class T>
struct type_tag {
    using type = T;
};

// Calls f(type_tag<Index>{}) with the narrowest index type svq instantiates
// that holds `bits` bits.
template <class F>
decltype(auto) with_index_type(std::size_t bits, F&& f) {
    if (bits <= 64) return f(type_tag<std::uint64_t>{});
    if (bits <= 128) return f(type_tag<wide_uint<128>>{});
    if (bits <= 192) return f(type_tag<wide_uint<192>>{});
    if (bits <= 256) return f(type_tag<wide_uint<256>>{});
    if (bits <= 384) return f(type_tag<wide_uint<384>>{});
    if (bits <= 512) return f(type_tag<wide_uint<512>>{});
    if (bits <= 768) return f(type_tag<wide_uint<768>>{});
    if (bits <= 1024) return f(type_tag<wide_uint<1024>>{});
    throw overflow_error(fmt::format("a PVQ index of {} bits is wider than the 1024 bits svq instantiates", bits));
}

// Row scales, stored relative to the matrix reference scale `ref`.
//  16 bits: fp16 of s / ref.
//   8 bits: code c in 1..255 means ref * 2^((c - 239) / 16) (steps of 4.4%,
//           from ref * 2^-14.9 to ref * 2); code 0 is a zero row.
struct row_scale_codec {
    unsigned bits = 16;
    float ref = 0.0f;

    static constexpr int log_steps_per_octave = 16;
    static constexpr int log_code_of_ref = 239;

    std::uint32_t encode(double s) const noexcept {
        if (!(s > 0.0) || !(ref > 0.0f)) return 0;
        const double r = s / static_cast<double>(ref);
        if (bits == 16) return float_to_half(static_cast<float>(r));
        const double c = std::round(log_code_of_ref + log_steps_per_octave * std::log2(r));
        return static_cast<std::uint32_t>(std::clamp(c, 1.0, 255.0));
    }
    // Throws svq::corrupt_data for an fp16 code that is negative, infinite or NaN.
    double decode(std::uint32_t code) const {
        if (code == 0) return 0.0;
        if (bits == 16) {
            const float r = half_to_float(static_cast<std::uint16_t>(code));
            if (!std::isfinite(r) || r < 0.0f)
                throw corrupt_data(fmt::format("row scale code {:#06x} decodes to {}", code, r));
            return static_cast<double>(r) * static_cast<double>(ref);
        }
        return static_cast<double>(ref) *
               std::exp2(static_cast<double>(static_cast<int>(code) - log_code_of_ref) / log_steps_per_octave);
    }
};

// Encoder and decoder of the rows of one layout, for one index type. Holds the
// split-order index tables of the full and the tail group and the two gain
// quantizers.
class row_coder {
public:
    virtual ~row_coder() = default;
    // x: cols floats, already rotated, finite. Appends the row to out.
    virtual void encode_row(const float* x, const row_scale_codec& scales, bit_writer& out) const = 0;
    // out: cols floats (not yet inverse-rotated).
    virtual void decode_row(const bit_reader& in, std::size_t bit_offset, const row_scale_codec& scales,
                            float* out) const = 0;
    // The row's points and gain levels before scaling: y: cols ints (group j's
    // point at j * group_dim), levels: groups_per_row values. Returns the row scale.
    virtual double decode_points(const bit_reader& in, std::size_t bit_offset, const row_scale_codec& scales, int* y,
                                 double* levels) const = 0;

    // The parts encode_row is made of, for encoders that choose points and
    // gains their own way (hessian/gptq.hpp) but keep the format.
    // Row scale code encode_row would store for x (cols floats, rotated, finite).
    virtual std::uint32_t row_scale_code(const float* x, const row_scale_codec& scales) const = 0;
    // Appends one row: y: cols ints (group j's point at j * group_dim, sum |y| = that
    // group's pulses), codes: groups_per_row gain codes (< 2^gain_bits).
    virtual void write_row(std::uint32_t scale_code, const int* y, const std::uint32_t* codes,
                           bit_writer& out) const = 0;
    // Gain quantizer of group j (gains normalised by the decoded row scale).
    virtual const scalar_quantizer& gain_quantizer(std::size_t group) const = 0;
    // Appends x's row with a given row scale code: the points of encode_row's
    // search, each gain code the nearest level to the optimal gain over the
    // decoded scale (requantize).
    virtual void encode_row_with_scale(const float* x, std::uint32_t scale_code, const row_scale_codec& scales,
                                       bit_writer& out) const = 0;
};

// Gain quantizer of a group of `dim` weights in a row of `cols`, for gains
// normalised by the row scale.
// The decoder's multiplier of a group's pulses, row scale * gain level / ||y||,
// as float(s) * float(level / sqrt(||y||^2 norm)): the second factor depends on
// the group's code and energy only, so a fast decoder takes it from a table
// (kernels/gemv.hpp) instead of a double division and square root per group.
// norm: 1, or the row length n when the inverse rotation's 1/sqrt(n) rides in
// the factor (the integer-stage rotation below). Every path that needs the
// decoded values (decode_row, the fast decoder, the Hessian quantizer's
// feedback) uses it, so they agree bit for bit.
inline float unit_factor(double level, std::int64_t energy, double norm = 1.0) noexcept {
    return static_cast<float>(level / std::sqrt(static_cast<double>(energy) * norm));
}
inline float group_factor_of(double row_scale, double level, std::int64_t energy, double norm = 1.0) noexcept {
    return static_cast<float>(row_scale) * unit_factor(level, energy, norm);
}
inline float group_factor(double row_scale, double level, const int* y, std::size_t dim) noexcept {
    return group_factor_of(row_scale, level, pulse_energy(y, dim));
}

// The integer-stage inverse rotation. Where R is one Walsh-Hadamard block
// (R^T v = D H v / sqrt(n), n = cols a power of two) and the groups are
// powers of two tiling the row, H = (stages half >= N) (stages half < N),
// and the stages below N act inside each group, on s l_j y_j / ||y_j|| with
// one factor per group: they are done exactly on the integer pulses
// (z_j = H_N y_j, |partial sums| <= K), the 1/sqrt(n) rides in the factor,
// and only the stages from half = N on run in floats. Decoded row:
//   w = D (stages half = N .. n/2)(float(z_j,i) * group_factor_of(s, l_j, ||y_j||^2, n))
// (fewer roundings than scaling first and transforming all log2 n stages in
// floats). Every decoder of such a matrix computes exactly this, bit for bit.
inline bool integer_stage_rotation(const matrix_layout& l, const hadamard_rotation* r) noexcept {
    return r != nullptr && r->single_hadamard() && std::has_single_bit(l.group_dim) && l.tail_dim == 0;
}

// The row of the formula above from its points (y: cols ints, transformed in
// place to z) and factors (one per group); signs: D. out: cols floats.
inline void integer_stage_inverse(int* y, const float* factors, std::size_t dim, std::size_t cols,
                                  const float* signs, float* out) noexcept {
    for (std::size_t j = 0; j * dim < cols; ++j) {
        hadamard_stages<int>(y + j * dim, dim, 1, nullptr);  // exact: any order of the same stages agrees
        scale_pulses(y + j * dim, factors[j], out + j * dim, dim);
    }
    hadamard_stages<float>(out, cols, dim, signs);
}

inline scalar_quantizer matrix_gain_quantizer(std::size_t dim, std::size_t cols, unsigned bits) {
    return optimal_beta_norm_quantizer(static_cast<unsigned>(dim), static_cast<unsigned>(cols), bits)
        .scaled(std::sqrt(static_cast<double>(cols)));
}

template <IndexType Index>
class pvq_row_coder final : public row_coder {
public:
    explicit pvq_row_coder(const matrix_layout& l, const search_options& search)
        : l_(l),
          search_(search),
          full_(l.group_dim, l.pulses),
          gain_(matrix_gain_quantizer(l.group_dim, l.cols, l.gain_bits)) {
        if (l.tail_dim != 0) {
            tail_.emplace(l.tail_dim, l.tail_pulses);
            tail_gain_.emplace(matrix_gain_quantizer(l.tail_dim, l.cols, l.gain_bits));
        }
    }

    void encode_row(const float* x, const row_scale_codec& scales, bit_writer& out) const override {
        std::vector<int> y(l_.cols);
        std::vector<std::uint32_t> codes(l_.groups_per_row());
        const std::uint32_t scale_code = plan_row(x, scales, y.data(), codes.data());
        write_row(scale_code, y.data(), codes.data(), out);
    }

    std::uint32_t row_scale_code(const float* x, const row_scale_codec& scales) const override {
        std::vector<int> y(l_.cols);
        std::vector<std::uint32_t> codes(l_.groups_per_row());
        return plan_row(x, scales, y.data(), codes.data());
    }

    void write_row(std::uint32_t scale_code, const int* y, const std::uint32_t* codes,
                   bit_writer& out) const override {
        out.write(scale_code, l_.row_scale_bits);
        for (std::size_t j = 0; j < l_.groups_per_row(); ++j) {
            const std::size_t first = j * l_.group_dim, dim = group_dim(j);
            const std::span<const int> point(y + first, dim);
            if (j < l_.full_groups) out.write_index(full_.template rank<Index>(point), l_.index_bits);
            else out.write_index(tail_->template rank<Index>(point), l_.tail_index_bits);
            out.write(codes[j], l_.gain_bits);
        }
    }

    const scalar_quantizer& gain_quantizer(std::size_t group) const override { return quantizer(group); }

    void encode_row_with_scale(const float* x, std::uint32_t scale_code, const row_scale_codec& scales,
                               bit_writer& out) const override {
        std::vector<int> y(l_.cols);
        std::vector<std::uint32_t> codes(l_.groups_per_row());
        std::vector<double> gains(l_.groups_per_row());
        search_row(x, y.data(), gains.data());
        const double stored = scales.decode(scale_code);
        for (std::size_t j = 0; j < gains.size(); ++j) codes[j] = stored > 0.0 ? quantizer(j).encode(gains[j] / stored) : 0;
        write_row(scale_code, y.data(), codes.data(), out);
    }

    void decode_row(const bit_reader& in, std::size_t offset, const row_scale_codec& scales,
                    float* out) const override {
        std::vector<int> y(l_.cols);
        std::vector<double> levels(l_.groups_per_row());
        const double s = decode_points(in, offset, scales, y.data(), levels.data());
        for (std::size_t j = 0; j < l_.groups_per_row(); ++j) {
            const std::size_t first = j * l_.group_dim, dim = group_dim(j);
            const float factor = group_factor_of(s, levels[j], pulse_energy(y.data() + first, dim));
            scale_pulses(y.data() + first, factor, out + first, dim);
        }
    }

    double decode_points(const bit_reader& in, std::size_t offset, const row_scale_codec& scales, int* y,
                         double* levels) const override {
        const double s = scales.decode(static_cast<std::uint32_t>(in.read(offset, l_.row_scale_bits)));
        offset += l_.row_scale_bits;
        for (std::size_t j = 0; j < l_.groups_per_row(); ++j) {
            const bool full = j < l_.full_groups;
            const std::size_t dim = group_dim(j), bits = full ? l_.index_bits : l_.tail_index_bits;
            const auto index = in.read_index<Index>(offset, bits);
            offset += bits;
            const auto code = static_cast<std::uint32_t>(in.read(offset, l_.gain_bits));
            offset += l_.gain_bits;
            (full ? full_ : *tail_).unrank(index, std::span<int>(y + j * l_.group_dim, dim));  // svq::corrupt_data for an index >= V
            levels[j] = quantizer(j).levels()[code];
        }
        return s;
    }

private:
    // Steps 1-4 of the file comment: points y (cols ints) and gain codes
    // (groups_per_row) of x; returns the row scale code.
    // Each group's point (y: cols ints) and optimal gain (gains: groups_per_row).
    void search_row(const float* x, int* y, double* gains) const {
        std::vector<double> scratch(pvq_search_scratch_size(l_.group_dim));
        for (std::size_t j = 0; j < l_.groups_per_row(); ++j) {
            const std::size_t first = j * l_.group_dim, dim = group_dim(j);
            pvq_search_dispatch(x + first, nullptr, dim, static_cast<int>(group_pulses(j)), y + first, search_,
                                scratch.data());
            gains[j] = optimal_gain(x + first, y + first, dim);
        }
    }

    std::uint32_t plan_row(const float* x, const row_scale_codec& scales, int* y, std::uint32_t* codes) const {
        const std::size_t groups = l_.groups_per_row();
        std::vector<double> gains(groups);
        search_row(x, y, gains.data());
        double energy = 0.0;
        for (std::size_t j = 0; j < groups; ++j) energy += gains[j] * gains[j];
        double s = std::sqrt(energy / static_cast<double>(l_.cols));
        if (s > 0.0) {
            for (int pass = 0; pass < 3; ++pass) {
                double gl = 0.0, ll = 0.0;
                for (std::size_t j = 0; j < groups; ++j) {
                    const scalar_quantizer& q = quantizer(j);
                    codes[j] = q.encode(gains[j] / s);
                    const double level = q.levels()[codes[j]];
                    gl += gains[j] * level;
                    ll += level * level;
                }
                if (!(gl > 0.0)) break;
                s = gl / ll;
            }
        }
        const std::uint32_t scale_code = scales.encode(s);
        const double stored = scales.decode(scale_code);
        for (std::size_t j = 0; j < groups; ++j) codes[j] = stored > 0.0 ? quantizer(j).encode(gains[j] / stored) : 0;
        return scale_code;
    }

    std::size_t group_dim(std::size_t j) const noexcept { return j < l_.full_groups ? l_.group_dim : l_.tail_dim; }
    std::size_t group_pulses(std::size_t j) const noexcept {
        return j < l_.full_groups ? l_.pulses : l_.tail_pulses;
    }
    const scalar_quantizer& quantizer(std::size_t j) const noexcept {
        return j < l_.full_groups ? gain_ : *tail_gain_;
    }

    matrix_layout l_;
    search_options search_;
    // Split-order index (format version 3, format/split_index.hpp).
    pvq_split_index full_;
    std::optional<pvq_split_index> tail_;
    scalar_quantizer gain_;
    std::optional<scalar_quantizer> tail_gain_;
};

inline std::shared_ptr<const row_coder> make_row_coder(const matrix_layout& l, const search_options& search) {
    return with_index_type(l.index_bits, [&](auto tag) -> std::shared_ptr<const row_coder> {
        return std::make_shared<pvq_row_coder<typename decltype(tag)::type>>(l, search);
    });
}

inline void check_matrix(std::span<const float> w, std::size_t rows, std::size_t cols, const char* who) {
    if (rows == 0 || cols == 0) throw invalid_argument(fmt::format("{}: matrix shape {} x {} is empty", who, rows, cols));
    if (w.size() != rows * cols)
        throw invalid_argument(
            fmt::format("{}: {} values for a {} x {} matrix (need {})", who, w.size(), rows, cols, rows * cols));
    for (std::size_t i = 0; i < w.size(); ++i) {
        if (!std::isfinite(w[i]))
            throw invalid_argument(fmt::format("{}: weight ({}, {}) = {} is not finite", who, i / cols, i % cols, w[i]));
    }
}

// Matrix reference scale: the largest row RMS (row scales are stored relative to it).
inline float reference_scale(std::span<const float> w, std::size_t rows, std::size_t cols) {
    double largest = 0.0;
    for (std::size_t r = 0; r < rows; ++r) {
        double e = 0.0;
        for (std::size_t c = 0; c < cols; ++c) e += static_cast<double>(w[r * cols + c]) * w[r * cols + c];
        largest = std::max(largest, std::sqrt(e / static_cast<double>(cols)));
    }
    if (!(largest <= static_cast<double>(std::numeric_limits<float>::max())))
        throw invalid_argument(fmt::format("row RMS {} does not fit in a float", largest));
    return static_cast<float>(largest);
}

}  // namespace detail

// The packed matrix: one bitstream of rows (scale, then (index, gain code) per
// group), the reference scale and the rotation seed.
class quantized_matrix {
public:
    quantized_matrix() = default;

    // Rebuilds a matrix from its stored parts (what a file reader has).
    // Throws svq::invalid_argument for a bad configuration and svq::corrupt_data
    // when words has the wrong length or the reference scale is not finite and
    // >= 0; a bad index or scale code inside a row throws svq::corrupt_data when
    // that row is decoded.
    quantized_matrix(std::size_t rows, std::size_t cols, const matrix_config& config, float reference_scale,
                     std::vector<std::uint64_t> words)
        : config_(config), layout_(make_layout(rows, cols, config)), words_(std::move(words)) {
        if (words_.size() != layout_.payload_words())
            throw corrupt_data(fmt::format("quantized matrix {} x {} ({}) needs {} words of payload, got {}", rows,
                                           cols, to_string(config), layout_.payload_words(), words_.size()));
        if (!std::isfinite(reference_scale) || reference_scale < 0.0f)
            throw corrupt_data(fmt::format("reference scale {} is not finite and >= 0", reference_scale));
        scales_ = {layout_.row_scale_bits, reference_scale};
        coder_ = detail::make_row_coder(layout_, config_.search);
        if (config_.rotate) rotation_.emplace(cols, config_.seed);
    }

    std::size_t rows() const noexcept { return layout_.rows; }
    std::size_t cols() const noexcept { return layout_.cols; }
    const matrix_config& config() const noexcept { return config_; }
    const matrix_layout& layout() const noexcept { return layout_; }
    float reference_scale() const noexcept { return scales_.ref; }
    std::span<const std::uint64_t> words() const noexcept { return words_; }

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
        decode_original(bit_reader(words_), r, out.data(), b);
    }

    // All rows, row-major (rows * cols floats).
    void dequantize(std::span<float> out) const {
        if (out.size() != rows() * cols())
            throw invalid_argument(
                fmt::format("dequantize: output has {} entries, the matrix {} x {}", out.size(), rows(), cols()));
        const bit_reader in(words_);
        row_buffers b = make_buffers();
        for (std::size_t r = 0; r < rows(); ++r) decode_original(in, r, out.data() + r * cols(), b);
    }
    std::vector<float> dequantize() const {
        std::vector<float> out(rows() * cols());
        dequantize(out);
        return out;
    }

private:
    struct row_buffers {
        std::vector<float> scratch;  // the rotation's
        std::vector<int> y;          // integer-stage rotation: the row's points
        std::vector<double> levels;
        std::vector<float> factors;
    };
    row_buffers make_buffers() const {
        row_buffers b;
        if (rotation_) b.scratch.resize(rotation_->scratch_size());
        if (integer_stages()) {
            b.y.resize(cols());
            b.levels.resize(layout_.groups_per_row());
            b.factors.resize(layout_.groups_per_row());
        }
        return b;
    }
    bool integer_stages() const noexcept {
        return detail::integer_stage_rotation(layout_, rotation_ ? &*rotation_ : nullptr);
    }
    // Row r in the original basis: decoded, then inverse-rotated (with the
    // integer-stage rotation where it applies, detail::integer_stage_inverse).
    void decode_original(const bit_reader& in, std::size_t r, float* out, row_buffers& b) const {
        const std::size_t offset = layout_.row_bit_offset(r);
        if (integer_stages()) {
            const double s = coder_->decode_points(in, offset, scales_, b.y.data(), b.levels.data());
            const std::size_t n = layout_.group_dim;
            for (std::size_t j = 0; j < b.levels.size(); ++j)
                b.factors[j] = detail::group_factor_of(s, b.levels[j], detail::pulse_energy(b.y.data() + j * n, n),
                                                       static_cast<double>(cols()));
            detail::integer_stage_inverse(b.y.data(), b.factors.data(), n, cols(), rotation_->signs().data(), out);
            return;
        }
        coder_->decode_row(in, offset, scales_, out);
        if (rotation_) rotation_->inverse(std::span<float>(out, cols()), b.scratch);
    }

    matrix_config config_{};
    matrix_layout layout_{};
    detail::row_scale_codec scales_{};
    std::vector<std::uint64_t> words_;
    std::shared_ptr<const detail::row_coder> coder_;
    std::optional<hadamard_rotation> rotation_;
};

namespace detail {

// The words of w (rows x cols, row-major, checked) encoded row by row:
// encode(r, row, out) appends row r, rotated first when config.rotate.
template <class Encode>
std::vector<std::uint64_t> encode_rows(std::span<const float> w, std::size_t rows, std::size_t cols,
                                       const matrix_config& config, Encode&& encode) {
    std::optional<hadamard_rotation> rotation;
    if (config.rotate) rotation.emplace(cols, config.seed);
    bit_writer out;
    std::vector<float> row(cols), scratch(rotation ? rotation->scratch_size() : 0);
    for (std::size_t r = 0; r < rows; ++r) {
        std::copy_n(w.data() + r * cols, cols, row.data());
        if (rotation) rotation->forward(row, scratch);
        encode(r, static_cast<const float*>(row.data()), out);
    }
    return std::move(out).take();
}

}  // namespace detail

// Quantizes a row-major rows x cols matrix with an explicit configuration.
// Throws svq::invalid_argument for an empty or ragged shape, a non-finite
// weight (naming its row, column and value) or a bad configuration, and
// svq::overflow_error when the index of (N, K) needs more than 1024 bits.
inline quantized_matrix quantize(std::span<const float> w, std::size_t rows, std::size_t cols,
                                 const matrix_config& config) {
    detail::check_matrix(w, rows, cols, "quantize");
    const matrix_layout layout = make_layout(rows, cols, config);
    const float ref = detail::reference_scale(w, rows, cols);
    const detail::row_scale_codec scales{layout.row_scale_bits, ref};
    const auto coder = detail::make_row_coder(layout, config.search);
    return quantized_matrix(rows, cols, config, ref,
                            detail::encode_rows(w, rows, cols, config, [&](std::size_t, const float* row, bit_writer& out) {
                                coder->encode_row(row, scales, out);
                            }));
}

inline std::vector<float> dequantize(const quantized_matrix& q) { return q.dequantize(); }

// Encodes w (rows x cols, row-major, finite) in the format of `like`: the same
// configuration, reference scale and row scales (their stored codes, so the
// same bits), with every group's point and gain code chosen again for w
// (quantize's search; the gain code nearest the optimal gain over the stored
// row scale). For quantization-aware fine-tuning, which keeps latent weights
// and encodes them again at every step, and for re-encoding an edited matrix.
// Throws svq::invalid_argument for a shape other than like's or a non-finite weight.
inline quantized_matrix requantize(const quantized_matrix& like, std::span<const float> w) {
    detail::check_matrix(w, like.rows(), like.cols(), "requantize");
    const matrix_layout& layout = like.layout();
    const detail::row_scale_codec scales{layout.row_scale_bits, like.reference_scale()};
    const auto coder = detail::make_row_coder(layout, like.config().search);
    const bit_reader stored(like.words());
    return quantized_matrix(
        like.rows(), like.cols(), like.config(), like.reference_scale(),
        detail::encode_rows(w, like.rows(), like.cols(), like.config(), [&](std::size_t r, const float* row, bit_writer& out) {
            const auto code = static_cast<std::uint32_t>(stored.read(layout.row_bit_offset(r), layout.row_scale_bits));
            coder->encode_row_with_scale(row, code, scales, out);
        }));
}

}  // namespace svq
