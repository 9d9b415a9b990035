// A fixed-rate scalar quantizer: the object every gain (scale) quantizer in svq produces.
// 2^bits reconstruction levels, sorted ascending, and the 2^bits - 1 decision thresholds between
// them. Thresholds are always the midpoints of adjacent levels: for a squared-error distortion the
// nearest level is the best code for any value whatever the levels are, so the levels alone
// describe the quantizer (docs/scale.md, "Lloyd-Max conditions").
#pragma once

#include <svq/error.hpp>

#include <fmt/format.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <utility>
#include <vector>

namespace svq {

class scalar_quantizer {
public:
    // Most levels a quantizer may have: codes are at most 16 bits wide.
    static constexpr unsigned max_bits = 16;

    // levels: 2^bits values, finite and strictly increasing (bits 0..16; one level is a fixed value).
    explicit scalar_quantizer(std::vector<double> levels) : levels_(std::move(levels)) {
        const std::size_t count = levels_.size();
        if (count == 0 || (count & (count - 1)) != 0 || count > (std::size_t{1} << max_bits)) {
            throw svq::invalid_argument(
                fmt::format("scalar_quantizer: {} levels, need a power of two from 1 to {}", count,
                            std::size_t{1} << max_bits));
        }
        for (std::size_t i = 0; i < count; ++i) {
            if (!std::isfinite(levels_[i])) {
                throw svq::invalid_argument(fmt::format("scalar_quantizer: level {} is {}", i, levels_[i]));
            }
            if (i > 0 && !(levels_[i - 1] < levels_[i])) {
                throw svq::invalid_argument(fmt::format("scalar_quantizer: levels not strictly increasing at {}: {} then {}",
                                                        i, levels_[i - 1], levels_[i]));
            }
        }
        while ((std::size_t{1} << bits_) < count) ++bits_;
        thresholds_.resize(count - 1);
        for (std::size_t i = 0; i + 1 < count; ++i) thresholds_[i] = std::midpoint(levels_[i], levels_[i + 1]);
    }

    unsigned bits() const noexcept { return bits_; }
    std::size_t size() const noexcept { return levels_.size(); }
    std::span<const double> levels() const noexcept { return levels_; }
    // thresholds()[i] separates levels()[i] and levels()[i + 1].
    std::span<const double> thresholds() const noexcept { return thresholds_; }

    // Code of the nearest level. A value exactly on a threshold takes the lower level. Branch-free
    // binary search: 2^bits - 1 thresholds, `bits` comparisons. NaN maps to code 0.
    std::uint32_t encode(double value) const noexcept {
        std::uint32_t code = 0;
        for (std::uint32_t step = static_cast<std::uint32_t>(levels_.size()) >> 1; step > 0; step >>= 1) {
            code += thresholds_[code + step - 1] < value ? step : 0;
        }
        return code;
    }

    // Level of a code; a code outside [0, 2^bits) means the stream that carried it is corrupt.
    double decode(std::uint32_t code) const {
        if (code >= levels_.size()) {
            throw svq::corrupt_data(fmt::format("scalar_quantizer: code {} outside [0, {})", code, levels_.size()));
        }
        return levels_[code];
    }

    // Many at once. values, codes: the same length n.
    void encode(std::span<const double> values, std::span<std::uint32_t> codes) const {
        if (values.size() != codes.size()) {
            throw svq::invalid_argument(
                fmt::format("scalar_quantizer::encode: {} values but {} codes", values.size(), codes.size()));
        }
        for (std::size_t i = 0; i < values.size(); ++i) codes[i] = encode(values[i]);
    }
    // codes, values: the same length n; throws svq::corrupt_data on the first code out of range.
    void decode(std::span<const std::uint32_t> codes, std::span<double> values) const {
        if (values.size() != codes.size()) {
            throw svq::invalid_argument(
                fmt::format("scalar_quantizer::decode: {} codes but {} values", codes.size(), values.size()));
        }
        for (std::size_t i = 0; i < codes.size(); ++i) values[i] = decode(codes[i]);
    }

    // Levels times factor (> 0, finite): one quantizer designed for a unit scale serves every row scale.
    scalar_quantizer scaled(double factor) const {
        if (!(factor > 0.0) || !std::isfinite(factor)) {
            throw svq::invalid_argument(fmt::format("scalar_quantizer::scaled: factor {} is not finite and positive", factor));
        }
        std::vector<double> levels(levels_);
        for (double& level : levels) level *= factor;
        return scalar_quantizer(std::move(levels));
    }

    friend bool operator==(const scalar_quantizer& a, const scalar_quantizer& b) noexcept {
        return a.levels_ == b.levels_;
    }

private:
    std::vector<double> levels_;
    std::vector<double> thresholds_;
    unsigned bits_ = 0;
};

}  // namespace svq
