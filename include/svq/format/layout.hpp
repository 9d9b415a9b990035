// Configuration and bit layout of a PVQ-quantized matrix.
//
// A row of `cols` weights is cut into groups of `group_dim` (N) consecutive
// columns; a last, shorter group (the tail, cols mod N columns) gets its own
// pyramid with proportionally fewer pulses. Each row is stored as
//
//   [row scale: row_scale_bits] [group 0: index, gain code] ... [tail: index, gain code]
//
// so every row has the same bit length and decodes on its own. Rows are packed
// back to back into 64-bit words (the last word padded). Matrix-level fields:
// the reference scale (fp32, 32 bits) that row scales are relative to, and the
// rotation seed (64 bits when rotated). bpw counts all of them and the padding
// (docs/design.md, "Bits per weight": every stored bit; only the header with shapes and the
// configuration is excepted).
#pragma once

#include <svq/error.hpp>
#include <svq/pvq/count.hpp>
#include <svq/pvq/search.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace svq {

struct matrix_config {
    std::size_t group_dim = 32;     // N: weights per group
    std::size_t pulses = 50;        // K for a full group (the tail gets round(K * tail / N), at least 1)
    unsigned gain_bits = 5;         // bits of each group's gain code (1..12)
    unsigned row_scale_bits = 16;   // 16: fp16 row scales; 8: log-coded against a matrix reference scale
    bool rotate = true;             // randomized Hadamard rotation of the input dimension first
    std::uint64_t seed = 0x5356512d524f54ull;  // rotation seed (stored)
    search_options search{};

    friend bool operator==(const matrix_config& a, const matrix_config& b) noexcept {
        return a.group_dim == b.group_dim && a.pulses == b.pulses && a.gain_bits == b.gain_bits &&
               a.row_scale_bits == b.row_scale_bits && a.rotate == b.rotate && a.seed == b.seed;
    }
};

inline std::string to_string(const matrix_config& c) {
    return fmt::format("N={} K={} gain_bits={} row_scale_bits={} rotate={}", c.group_dim, c.pulses, c.gain_bits,
                       c.row_scale_bits, c.rotate ? "yes" : "no");
}

// Pulses of the tail group of `tail_dim` columns for full groups of (dim, pulses).
inline std::size_t tail_pulses(std::size_t dim, std::size_t pulses, std::size_t tail_dim) noexcept {
    if (tail_dim == 0) return 0;
    const auto k = static_cast<std::size_t>(std::llround(static_cast<double>(pulses) * tail_dim / dim));
    return std::max<std::size_t>(k, 1);
}

// Every size of the stored format, derived from (rows, cols, config) in one place.
struct matrix_layout {
    std::size_t rows = 0;
    std::size_t cols = 0;
    std::size_t group_dim = 0;
    std::size_t pulses = 0;
    std::size_t full_groups = 0;  // per row
    std::size_t tail_dim = 0;     // 0: no tail group
    std::size_t tail_pulses = 0;
    std::size_t index_bits = 0;       // per full group
    std::size_t tail_index_bits = 0;  // per tail group
    unsigned gain_bits = 0;
    unsigned row_scale_bits = 0;
    bool rotate = false;

    std::size_t groups_per_row() const noexcept { return full_groups + (tail_dim != 0); }
    std::size_t bits_per_row() const noexcept {
        return row_scale_bits + full_groups * (index_bits + gain_bits) +
               (tail_dim != 0 ? tail_index_bits + gain_bits : 0);
    }
    // Matrix-level stored fields: reference scale, rotation seed.
    std::size_t matrix_bits() const noexcept { return 32 + (rotate ? 64 : 0); }
    std::size_t payload_bits() const noexcept { return rows * bits_per_row(); }
    std::size_t payload_words() const noexcept { return (payload_bits() + 63) / 64; }
    std::size_t total_bits() const noexcept { return payload_words() * 64 + matrix_bits(); }
    double bits_per_weight() const noexcept {
        return static_cast<double>(total_bits()) / static_cast<double>(rows * cols);
    }
    std::size_t row_bit_offset(std::size_t row) const noexcept { return row * bits_per_row(); }
};

// Validates a configuration for a rows x cols matrix and computes its layout.
// Throws svq::invalid_argument naming the bad value.
inline matrix_layout make_layout(std::size_t rows, std::size_t cols, const matrix_config& c) {
    if (rows == 0 || cols == 0) throw invalid_argument(fmt::format("matrix shape {} x {} is empty", rows, cols));
    if (c.group_dim == 0 || c.group_dim >= cols)
        throw invalid_argument(
            fmt::format("group_dim = {} must be in [1, cols) for a matrix of {} columns", c.group_dim, cols));
    if (c.pulses == 0 || c.pulses > (1u << 20))
        throw invalid_argument(fmt::format("pulses K = {} must be in [1, 2^20]", c.pulses));
    if (c.gain_bits == 0 || c.gain_bits > 12)
        throw invalid_argument(fmt::format("gain_bits = {} must be in [1, 12]", c.gain_bits));
    if (c.row_scale_bits != 8 && c.row_scale_bits != 16)
        throw invalid_argument(fmt::format("row_scale_bits = {} must be 8 or 16", c.row_scale_bits));
    matrix_layout l;
    l.rows = rows;
    l.cols = cols;
    l.group_dim = c.group_dim;
    l.pulses = c.pulses;
    l.full_groups = cols / c.group_dim;
    l.tail_dim = cols % c.group_dim;
    l.tail_pulses = tail_pulses(c.group_dim, c.pulses, l.tail_dim);
    l.index_bits = pvq_index_bits(c.group_dim, c.pulses);
    l.tail_index_bits = l.tail_dim != 0 ? pvq_index_bits(l.tail_dim, l.tail_pulses) : 0;
    l.gain_bits = c.gain_bits;
    l.row_scale_bits = c.row_scale_bits;
    l.rotate = c.rotate;
    constexpr std::size_t max_index_bits = 1024;
    if (l.index_bits > max_index_bits)
        throw overflow_error(fmt::format("PVQ index of N={}, K={} needs {} bits; the matrix codec holds at most {}",
                                         c.group_dim, c.pulses, l.index_bits, max_index_bits));
    // Every size the layout computes (rows * cols, rows * bits_per_row + 63) fits a size_t.
    const std::size_t max = static_cast<std::size_t>(-1);
    if (rows > max / cols || rows > (max - 63) / l.bits_per_row())
        throw overflow_error(fmt::format("a {} x {} matrix ({} bits per row) has more bits than a size_t holds", rows,
                                         cols, l.bits_per_row()));
    return l;
}

}  // namespace svq
