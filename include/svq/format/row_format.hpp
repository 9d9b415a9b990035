// The stored rows of a quantized matrix (format version 3): the one writer
// and the one reader every encoder and decoder goes through.
//
// A row of the layout (format/layout.hpp) is, least significant bit first in
// 64-bit words (core/bitstream.hpp), at bit row_bit_offset(r):
//
//   row scale code         row_scale_bits (16: fp16 of s / ref; 8: log code)
//   per group j, in order: split-order index of its point y_j of P(N, K)
//                          (index_bits; the tail group: tail_index_bits of
//                          P(N_tail, K_tail)), then its gain code (gain_bits)
//
// and decodes to x_j = s * l_j * y_j / ||y_j|| (l_j the level of the gain
// code, s the row scale), in the rotated basis when the matrix is rotated.
// The multiplier of group j is formed in one way everywhere
// (detail::group_factor_of), so every decoder agrees bit for bit; where the
// integer-stage rotation applies (detail::integer_stage_rotation), the decoded
// row in the original basis is defined by detail::integer_stage_inverse.
// docs/matrix.md describes the format and docs/design.md its derivation.
#pragma once

#include <svq/core/bitstream.hpp>
#include <svq/concepts.hpp>
#include <svq/core/half.hpp>
#include <svq/error.hpp>
#include <svq/format/layout.hpp>
#include <svq/format/split_index.hpp>
#include <svq/pvq/pulses.hpp>
#include <svq/rotate/hadamard_rotation.hpp>
#include <svq/scale/lloyd_max.hpp>
#include <svq/scale/scalar_quantizer.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace svq {

// The version of the stored matrix this header writes and reads.
inline constexpr unsigned format_version = 3;

namespace detail {

// Row scales, stored relative to the matrix reference scale `ref`.
//  16 bits: fp16 of s / ref.
//   8 bits: code c in 1..255 means ref * 2^((c - 239) / 16) (steps of 4.4%,
//           from ref * 2^-14.9 to ref * 2); code 0 is a zero row.
// Each width represents s / ref in [smallest_relative, largest_relative)
// (represents()); outside it encode clamps (8 bits) or rounds to zero or
// infinity (16 bits), so encoders refuse such a row instead of storing it.
struct row_scale_codec {
    unsigned bits = 16;
    float ref = 0.0f;

    static constexpr int log_steps_per_octave = 16;
    static constexpr int log_code_of_ref = 239;

    // 8 bits: the ratios whose code rounds into 1..255. 16 bits: fp16 keeps
    // at least 3 significant bits (subnormals below 2^-22 keep fewer, and
    // below 2^-25 round to zero) up to the largest finite fp16.
    static double smallest_relative(unsigned bits) noexcept {
        return bits == 16 ? std::ldexp(1.0, -22)
                          : std::exp2((0.5 - log_code_of_ref) / static_cast<double>(log_steps_per_octave));
    }
    static double largest_relative(unsigned bits) noexcept {
        return bits == 16 ? 65504.0
                          : std::exp2((255.5 - log_code_of_ref) / static_cast<double>(log_steps_per_octave));
    }
    // Whether a row scale s > 0 is stored to the codec's resolution (s / ref in range).
    bool represents(double s) const noexcept {
        const double r = s / static_cast<double>(ref);
        return r >= smallest_relative(bits) && r < largest_relative(bits);
    }

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

// A decoded row (n floats, row r) of a matrix whose format may_overflow():
// svq::corrupt_data naming the row, column and value when an entry is not finite.
inline void check_finite_row(const float* row, std::size_t n, std::size_t r) {
    for (std::size_t i = 0; i < n; ++i)
        if (!std::isfinite(row[i]))
            throw corrupt_data(fmt::format("row {} decodes to {} at column {}: its row scale times the reference "
                                           "scale passes the float range",
                                           r, row[i], i));
}

// The decoder's multiplier of a group's pulses, row scale * gain level / ||y||,
// as float(s) * float(level / sqrt(||y||^2 norm)): the second factor depends on
// the group's code and energy only, so a fast decoder takes it from a table
// (kernels/) instead of a double division and square root per group.
// norm: 1, or the row length n when the inverse rotation's 1/sqrt(n) rides in
// the factor (the integer-stage rotation below).
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

// Gain quantizer of a group of `dim` weights in a row of `cols`, for gains
// normalised by the row scale (docs/design.md, "Gain quantizer").
inline scalar_quantizer matrix_gain_quantizer(std::size_t dim, std::size_t cols, unsigned bits) {
    return optimal_beta_norm_quantizer(static_cast<unsigned>(dim), static_cast<unsigned>(cols), bits)
        .scaled(std::sqrt(static_cast<double>(cols)));
}

// Limbs as one hexadecimal number, for error messages.
inline std::string limbs_hex(const std::uint64_t* w, std::size_t n) {
    std::string s = "0x";
    std::size_t top = limbs_used(w, n);
    if (top == 0) return "0x0";
    s += fmt::format("{:x}", w[top - 1]);
    while (top-- > 1) s += fmt::format("{:016x}", w[top - 1]);
    return s;
}

// A shape code's scratch for unranking many groups (unrank_batch), where it has one.
struct no_workspace {};
template <class S>
struct workspace_of {
    using type = no_workspace;
};
template <class S>
    requires requires { typename S::unrank_workspace; }
struct workspace_of<S> {
    using type = typename S::unrank_workspace;
};

}  // namespace detail

// The gain quantizers of format version 3: for a group of `dim` weights in
// a row of `cols`, the quantizer optimal for the normalised gain of a
// Gaussian row (detail::matrix_gain_quantizer).
struct beta_gain_quantizers {
    scalar_quantizer make(std::size_t dim, std::size_t cols, unsigned bits) const {
        return detail::matrix_gain_quantizer(dim, cols, bits);
    }
};

// The writer and the reader of the rows of one matrix: its layout, the shape
// code of the full and the tail group (the split-order index of
// format/split_index.hpp by default), the gain quantizers and the row scale
// codec (reference scale `ref`). Plain member functions, no dispatch table;
// built once per matrix (the index tables cost milliseconds). Format version 3 is basic_row_format<> (row_format);
// other shape codes or gain quantizers give other formats of the same layout.
template <ShapeCode Shape = pvq_split_index, GainQuantizers Gains = beta_gain_quantizers>
class basic_row_format {
public:
    using shape_code = Shape;
    using gains_type = Gains;
    using gain_quantizer_type = std::decay_t<decltype(std::declval<const Gains&>().make(1, 1, 1))>;

    // The shape code's scratch for unranking many groups, where it has one.
    using workspace = typename detail::workspace_of<Shape>::type;

    // Scratch of the reader, reused across rows.
    struct buffers {
        std::vector<std::uint64_t> index;  // the full groups' indices, full_index().limbs() words each
        std::array<std::uint64_t, detail::max_split_limbs> tail_index{};
        std::vector<std::uint32_t> codes;  // one per group
        workspace ws;
    };

    // Throws svq::invalid_argument for a reference scale that is not finite
    // and >= 0 and svq::overflow_error when the index of (N, K) needs more
    // than 1024 bits.
    basic_row_format(const matrix_layout& l, float reference_scale, const Gains& gains = {})
        : l_(l),
          scales_{l.row_scale_bits, reference_scale},
          gains_(gains),
          full_(l.group_dim, l.pulses),
          gain_(gains.make(l.group_dim, l.cols, l.gain_bits)),
          levels_(levels_of(gain_)) {
        if (!std::isfinite(reference_scale) || reference_scale < 0.0f)
            throw invalid_argument(fmt::format("row_format: reference scale {} is not finite and >= 0", reference_scale));
        if (l.tail_dim != 0) {
            tail_.emplace(l.tail_dim, l.tail_pulses);
            tail_gain_.emplace(gains.make(l.tail_dim, l.cols, l.gain_bits));
            tail_levels_ = levels_of(*tail_gain_);
        }
        // A decoded row's norm is at most (largest row scale) * (largest level)
        // * sqrt(groups), and no entry exceeds the norm, rotated or not.
        double level = 0.0;
        for (const double v : levels_) level = std::max(level, std::fabs(v));
        for (const double v : tail_levels_) level = std::max(level, std::fabs(v));
        const double bound = static_cast<double>(reference_scale) * detail::row_scale_codec::largest_relative(l.row_scale_bits) *
                             level * std::sqrt(static_cast<double>(groups()));
        may_overflow_ = !(bound < 0.5 * static_cast<double>(std::numeric_limits<float>::max()));
    }

    // Whether some row scale code would decode a row past the float range (a
    // reference scale within about 2^20 of FLT_MAX: weights near it, or a
    // damaged file). The decoders then check every decoded row
    // (detail::check_finite_row); for any other matrix no row can overflow.
    bool may_overflow() const noexcept { return may_overflow_; }

    const matrix_layout& layout() const noexcept { return l_; }
    const detail::row_scale_codec& scales() const noexcept { return scales_; }
    std::size_t groups() const noexcept { return l_.groups_per_row(); }
    bool is_full(std::size_t j) const noexcept { return j < l_.full_groups; }
    std::size_t group_dim(std::size_t j) const noexcept { return is_full(j) ? l_.group_dim : l_.tail_dim; }
    std::size_t group_pulses(std::size_t j) const noexcept { return is_full(j) ? l_.pulses : l_.tail_pulses; }
    const Shape& index_of(std::size_t j) const noexcept { return is_full(j) ? full_ : *tail_; }
    const Shape& full_index() const noexcept { return full_; }
    const Gains& gains() const noexcept { return gains_; }
    // Gain quantizer of group j (gains normalised by the decoded row scale).
    const gain_quantizer_type& gain_quantizer(std::size_t j) const noexcept {
        return is_full(j) ? gain_ : *tail_gain_;
    }
    // Its code of a normalised gain, and the level of a code (< 2^gain_bits,
    // as every decoder multiplies by it: the quantizer's decode, tabulated).
    std::uint32_t gain_code(std::size_t j, double normalised_gain) const {
        return gain_quantizer(j).encode(normalised_gain);
    }
    double gain_level(std::size_t j, std::uint32_t code) const noexcept {
        return (is_full(j) ? levels_ : tail_levels_)[code];
    }
    // Every level of group j's quantizer, by code (2^gain_bits values).
    std::span<const double> gain_levels(std::size_t j) const noexcept { return is_full(j) ? levels_ : tail_levels_; }

    buffers make_buffers() const {
        buffers b;
        b.index.resize(l_.full_groups * full_.limbs());
        b.codes.resize(groups());
        return b;
    }

    // ---- writer -------------------------------------------------------
    // Appends one row: y: cols ints (group j's point at j * group_dim, a point
    // of P(group_dim(j), group_pulses(j)), unchecked), codes: groups() gain
    // codes (< 2^gain_bits).
    void write_row(std::uint32_t scale_code, const int* y, const std::uint32_t* codes, bit_writer& out) const {
        out.write(scale_code, l_.row_scale_bits);
        std::array<std::uint64_t, detail::max_split_limbs> index{};
        for (std::size_t j = 0; j < groups(); ++j) {
            index_of(j).rank(y + j * l_.group_dim, index.data());
            out.write_limbs(index.data(), is_full(j) ? l_.index_bits : l_.tail_index_bits);
            out.write(codes[j], l_.gain_bits);
        }
    }

    // ---- reader -------------------------------------------------------
    // Row r's stored scale code (words: the matrix payload, validated in size by its owner).
    std::uint32_t read_scale_code(std::span<const std::uint64_t> words, std::size_t r) const noexcept {
        return static_cast<std::uint32_t>(bit_reader(words).read(l_.row_bit_offset(r), l_.row_scale_bits));
    }

    // Row r's fields: returns the decoded row scale; the full groups' indices
    // into b.index, the tail group's into b.tail_index, the gain codes into
    // b.codes. Throws svq::corrupt_data for an index >= V(N, K) (naming row,
    // group and index) or a bad row scale code.
    double read_fields(std::span<const std::uint64_t> words, std::size_t r, buffers& b) const {
        return read_fields(words, r, b.index.data(), b.tail_index.data(), b.codes.data());
    }
    double read_fields(std::span<const std::uint64_t> words, std::size_t r, std::uint64_t* index,
                       std::uint64_t* tail_index, std::uint32_t* codes) const {
        const bit_reader in(words);
        std::size_t offset = l_.row_bit_offset(r);
        const double s = scales_.decode(static_cast<std::uint32_t>(in.read(offset, l_.row_scale_bits)));
        offset += l_.row_scale_bits;
        const std::size_t ib = l_.index_bits, gb = l_.gain_bits, full = l_.full_groups;
        if (full_.limbs() == 1 && ib + gb <= 64 && size_in_one_word()) {
            // Index and code of a full group in one field of <= 64 bits.
            const std::uint64_t size = one_word_size();
            bool bad;
            if ((offset + full * (ib + gb)) / 64 + 1 < words.size()) {
                bad = read_word_fields(words.data(), offset, full, ib, gb, size, index, codes);
            } else {  // the last row: the word after the last field may not exist
                bad = false;
                const std::uint64_t index_mask = (std::uint64_t{1} << ib) - 1;  // ib <= 63 here
                for (std::size_t j = 0; j < full; ++j) {
                    const std::uint64_t v = in.read(offset + j * (ib + gb), ib + gb);
                    index[j] = v & index_mask;
                    codes[j] = static_cast<std::uint32_t>(v >> ib);
                    bad |= index[j] >= size;
                }
            }
            if (bad)
                for (std::size_t j = 0; j < full; ++j)
                    if (index[j] >= size) throw bad_index(r, j, index + j);
            offset += full * (ib + gb);
        } else {
            const std::size_t w = full_.limbs();
            for (std::size_t j = 0; j < full; ++j) {
                offset = read_group(in, offset, j, index + j * w, codes[j]);
                if (!full_.in_range(index + j * w)) throw bad_index(r, j, index + j * w);
            }
        }
        if (l_.tail_dim != 0) {
            offset = read_group(in, offset, full, tail_index, codes[full]);
            if (!tail_->in_range(tail_index)) throw bad_index(r, full, tail_index);
        }
        return s;
    }

    // The points of the fields read_fields gave: y: cols ints (group j's at j * group_dim).
    // (The split-order index unranks a row's groups together: unrank_batch.)
    void unrank_points(const std::uint64_t* index, const std::uint64_t* tail_index, int* y, workspace& ws) const {
        if constexpr (requires { full_.unrank_batch(index, l_.full_groups, y, ws); }) {
            full_.unrank_batch(index, l_.full_groups, y, ws);
        } else {
            const std::size_t w = full_.limbs();
            for (std::size_t j = 0; j < l_.full_groups; ++j) full_.unrank(index + j * w, y + j * l_.group_dim);
        }
        if (l_.tail_dim != 0) unrank_tail(tail_index, y + l_.full_groups * l_.group_dim);
    }
    // The tail group's point alone (y: tail_dim ints); the layout has a tail group.
    void unrank_tail(const std::uint64_t* tail_index, int* y) const { tail_->unrank(tail_index, y); }

    // Row r's points (y: cols ints) and gain levels (levels: groups()); returns the row scale.
    double read_points(std::span<const std::uint64_t> words, std::size_t r, int* y, double* levels, buffers& b) const {
        const double s = read_fields(words, r, b);
        unrank_points(b.index.data(), b.tail_index.data(), y, b.ws);
        for (std::size_t j = 0; j < groups(); ++j) levels[j] = gain_level(j, b.codes[j]);
        return s;
    }

    // The decoded values of group j from its point, gain level and the row
    // scale (norm: 1, or cols for the integer-stage rotation): the factor
    // every decoder multiplies the pulses by.
    float factor(double row_scale, std::size_t j, double level, const int* y, double norm = 1.0) const noexcept {
        return detail::group_factor_of(row_scale, level, detail::pulse_energy(y, group_dim(j)), norm);
    }

    // Row r decoded (the reference decoder), before any inverse rotation:
    // out: cols floats; y: cols ints of scratch (left holding the points).
    void decode_row(std::span<const std::uint64_t> words, std::size_t r, float* out, int* y, buffers& b) const {
        const double s = read_fields(words, r, b);
        unrank_points(b.index.data(), b.tail_index.data(), y, b.ws);
        for (std::size_t j = 0; j < groups(); ++j) {
            const std::size_t first = j * l_.group_dim;
            const float f = factor(s, j, gain_level(j, b.codes[j]), y + first);
            detail::scale_pulses(y + first, f, out + first, group_dim(j));
        }
    }

private:
    // One group's index (its limbs) and gain code at `offset`; returns the offset after them.
    std::size_t read_group(const bit_reader& in, std::size_t offset, std::size_t j, std::uint64_t* index,
                           std::uint32_t& code) const noexcept {
        const std::size_t bits = is_full(j) ? l_.index_bits : l_.tail_index_bits;
        in.read_limbs(offset, bits, index, index_of(j).limbs());
        offset += bits;
        code = static_cast<std::uint32_t>(in.read(offset, l_.gain_bits));
        return offset + l_.gain_bits;
    }

    // `count` fields of ib + gb <= 64 bits from bit `offset` of words (both
    // words of every field exist): index (ib low bits) and gain code. Returns
    // whether an index is >= size. Two loads and shifts per field, no branch
    // (the second shift pair gives 0 when the field starts on a word). Not
    // inlined: inside a decoder's row function the loop's values were
    // spilled to the stack.
    [[gnu::noinline]] static bool read_word_fields(const std::uint64_t* words, std::size_t offset, std::size_t count,
                                                   std::size_t ib, std::size_t gb, std::uint64_t size,
                                                   std::uint64_t* index, std::uint32_t* codes) noexcept {
        const std::uint64_t index_mask = (std::uint64_t{1} << ib) - 1;  // ib <= 63 here
        const std::uint64_t code_mask = (std::uint64_t{1} << gb) - 1;   // gb <= 12
        bool bad = false;
        for (std::size_t j = 0; j < count; ++j, offset += ib + gb) {
            const std::size_t w = offset / 64;
            const auto sh = static_cast<unsigned>(offset % 64);
            const std::uint64_t v = (words[w] >> sh) | ((words[w + 1] << 1) << (63 - sh));
            index[j] = v & index_mask;
            codes[j] = static_cast<std::uint32_t>((v >> ib) & code_mask);
            bad |= index[j] >= size;
        }
        return bad;
    }

    corrupt_data bad_index(std::size_t r, std::size_t j, const std::uint64_t* index) const {
        const Shape& ix = index_of(j);
        return corrupt_data(fmt::format("row {} group {}: index {} is not below V(N={}, K={})", r, j,
                                        detail::limbs_hex(index, ix.limbs()), ix.dim(), ix.pulses()));
    }

    // Where the full group's V(N, K) is one known word, the one-word field reader checks against it.
    bool size_in_one_word() const noexcept {
        if constexpr (requires { full_.size_limbs(); }) return true;
        return false;
    }
    std::uint64_t one_word_size() const noexcept {
        if constexpr (requires { full_.size_limbs(); })
            return full_.size_limbs()[0];
        else
            return 0;
    }

    template <ScaleQuantizer Q>
    static std::vector<double> levels_of(const Q& q) {
        std::vector<double> levels(std::size_t{1} << q.bits());
        for (std::size_t c = 0; c < levels.size(); ++c) levels[c] = q.decode(static_cast<std::uint32_t>(c));
        return levels;
    }

    matrix_layout l_{};
    detail::row_scale_codec scales_{};
    Gains gains_;
    Shape full_;
    std::optional<Shape> tail_;
    gain_quantizer_type gain_;
    std::optional<gain_quantizer_type> tail_gain_;
    std::vector<double> levels_, tail_levels_;
    bool may_overflow_ = false;
};

// Format version 3.
using row_format = basic_row_format<>;

}  // namespace svq
