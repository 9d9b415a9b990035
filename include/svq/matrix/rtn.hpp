// Round-to-nearest baseline: per group of G consecutive weights of a row,
// absmax scaling to signed b-bit integers with an fp16 scale, the way ggml's
// Q4_0 / Q8_0 family does: the weight of largest magnitude m maps exactly to
// the integer -2^(b-1), d = m / -2^(b-1), q = clamp(round(w / d), -2^(b-1), 2^(b-1) - 1).
// bpw = b + 16 / G (plus the shorter tail group's scale).
#pragma once

#include <svq/core/checks.hpp>
#include <svq/core/half.hpp>
#include <svq/core/parallel.hpp>
#include <svq/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace svq {

struct rtn_config {
    unsigned bits = 4;        // 1..8
    std::size_t group = 32;   // weights per scale
};

namespace detail {

inline void check_rtn_config(const rtn_config& c) {
    if (c.bits == 0 || c.bits > 8) throw invalid_argument(fmt::format("rtn: bits = {} must be in [1, 8]", c.bits));
    if (c.group == 0) throw invalid_argument("rtn: group = 0 must be >= 1");
}

}  // namespace detail

// The fp16-rounded scale d of a group (0 for an all-zero group).
inline float rtn_group_scale(std::span<const float> group, unsigned bits) noexcept {
    float m = 0.0f;
    for (const float v : group)
        if (std::fabs(v) > std::fabs(m)) m = v;
    const float d = m / -static_cast<float>(1u << (bits - 1));
    return half_to_float(float_to_half(d));
}

// The integer of w for scale d (d == 0 gives 0).
inline int rtn_round(float w, float d, unsigned bits) noexcept {
    if (d == 0.0f) return 0;
    const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
    return std::clamp(static_cast<int>(std::lround(w / d)), lo, hi);
}

class rtn_matrix {
public:
    rtn_matrix() = default;
    // From stored parts: codes rows * cols (each in [-2^(b-1), 2^(b-1))), scales rows *
    // groups_per_row() fp16 values. Throws svq::invalid_argument for a bad config or shape,
    // svq::corrupt_data for wrong lengths or a code out of range.
    rtn_matrix(std::size_t rows, std::size_t cols, const rtn_config& config, std::vector<std::int8_t> codes,
               std::vector<std::uint16_t> scales)
        : rows_(rows), cols_(cols), config_(config), codes_(std::move(codes)), scales_(std::move(scales)) {
        detail::check_rtn_config(config);
        if (rows == 0 || cols == 0) throw invalid_argument(fmt::format("rtn_matrix: shape {} x {} is empty", rows, cols));
        if (codes_.size() != detail::checked_size(rows, cols, "rtn_matrix") || scales_.size() != rows * groups_per_row())
            throw corrupt_data(fmt::format("rtn_matrix {} x {}: {} codes and {} scales, need {} and {}", rows, cols,
                                           codes_.size(), scales_.size(), rows * cols, rows * groups_per_row()));
        const int lo = -(1 << (config.bits - 1)), hi = (1 << (config.bits - 1)) - 1;
        for (std::size_t i = 0; i < codes_.size(); ++i)
            if (codes_[i] < lo || codes_[i] > hi)
                throw corrupt_data(fmt::format("rtn_matrix: code {} at {} outside [{}, {}]", int{codes_[i]}, i, lo, hi));
    }
    std::size_t rows() const noexcept { return rows_; }
    std::size_t cols() const noexcept { return cols_; }
    const rtn_config& config() const noexcept { return config_; }
    std::size_t groups_per_row() const noexcept { return (cols_ + config_.group - 1) / config_.group; }
    // Every stored bit: one b-bit integer per weight, one fp16 scale per group.
    std::size_t stored_bits() const noexcept { return rows_ * (cols_ * config_.bits + groups_per_row() * 16); }
    double bits_per_weight() const noexcept {
        return static_cast<double>(stored_bits()) / static_cast<double>(rows_ * cols_);
    }
    std::span<const std::int8_t> codes() const noexcept { return codes_; }
    std::span<const std::uint16_t> scales() const noexcept { return scales_; }

    // All rows, row-major (rows * cols floats): code * scale of its group.
    void dequantize(std::span<float> out) const {
        if (out.size() != rows_ * cols_)
            throw invalid_argument(
                fmt::format("rtn_matrix::dequantize: output has {} entries, the matrix {} x {}", out.size(), rows_, cols_));
        for (std::size_t r = 0; r < rows_; ++r)
            for (std::size_t c = 0; c < cols_; ++c) {
                const float d = half_to_float(scales_[r * groups_per_row() + c / config_.group]);
                out[r * cols_ + c] = static_cast<float>(codes_[r * cols_ + c]) * d;
            }
    }
    std::vector<float> dequantize() const {
        std::vector<float> out(rows_ * cols_);
        dequantize(out);
        return out;
    }

    // y = Wq x (x: cols floats, y: rows floats): per group, scale * sum of
    // code * x in double. Batched: x: batch * cols (vector c at c * cols),
    // y: batch * rows (vector c at c * rows). Rows over `threads` (0: all cores).
    void gemv(std::span<const float> x, std::span<float> y, unsigned threads = 1) const {
        gemv_batch(x, y, 1, threads);
    }
    void gemv_batch(std::span<const float> x, std::span<float> y, std::size_t batch, unsigned threads = 1) const {
        detail::check_gemv_shapes(x.size(), y.size(), batch, rows_, cols_, "rtn_matrix::gemv");
        detail::parallel_slices(rows_, threads, [&](std::size_t first, std::size_t end) {
            for (std::size_t r = first; r < end; ++r)
                for (std::size_t b = 0; b < batch; ++b) {
                    const float* xb = x.data() + b * cols_;
                    double acc = 0.0;
                    for (std::size_t g = 0; g < groups_per_row(); ++g) {
                        const std::size_t c0 = g * config_.group, c1 = std::min(cols_, c0 + config_.group);
                        double dot = 0.0;
                        for (std::size_t c = c0; c < c1; ++c) dot += codes_[r * cols_ + c] * static_cast<double>(xb[c]);
                        acc += static_cast<double>(half_to_float(scales_[r * groups_per_row() + g])) * dot;
                    }
                    y[b * rows_ + r] = static_cast<float>(acc);
                }
        });
    }

private:
    std::size_t rows_ = 0, cols_ = 0;
    rtn_config config_{};
    std::vector<std::int8_t> codes_;
    std::vector<std::uint16_t> scales_;
};

// Throws svq::invalid_argument for a bad shape, a non-finite weight or a bad config.
inline rtn_matrix rtn_quantize(std::span<const float> w, std::size_t rows, std::size_t cols, const rtn_config& config) {
    detail::check_rtn_config(config);
    if (rows == 0 || cols == 0) throw invalid_argument(fmt::format("rtn_quantize: matrix shape {} x {} is empty", rows, cols));
    if (w.size() != detail::checked_size(rows, cols, "rtn_quantize"))
        throw invalid_argument(fmt::format("rtn_quantize: {} values for a {} x {} matrix", w.size(), rows, cols));
    const std::size_t groups = (cols + config.group - 1) / config.group;
    std::vector<std::int8_t> codes(rows * cols);
    std::vector<std::uint16_t> scales(rows * groups);
    for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t g = 0; g < groups; ++g) {
            const std::size_t first = g * config.group, n = std::min(config.group, cols - first);
            const std::span<const float> group = w.subspan(r * cols + first, n);
            for (std::size_t i = 0; i < n; ++i)
                if (!std::isfinite(group[i]))
                    throw invalid_argument(
                        fmt::format("rtn_quantize: weight ({}, {}) = {} is not finite", r, first + i, group[i]));
            const float d = rtn_group_scale(group, config.bits);
            scales[r * groups + g] = float_to_half(d);
            for (std::size_t i = 0; i < n; ++i)
                codes[r * cols + first + i] = static_cast<std::int8_t>(rtn_round(group[i], d, config.bits));
        }
    }
    return rtn_matrix(rows, cols, config, std::move(codes), std::move(scales));
}

}  // namespace svq
