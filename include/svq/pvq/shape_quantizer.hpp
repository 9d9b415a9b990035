// The search as a ShapeQuantizer object: fixed (N, K) and search options.
#pragma once

#include <svq/error.hpp>
#include <svq/pvq/search.hpp>

#include <fmt/format.h>

#include <cstddef>
#include <span>

namespace svq {

class pvq_shape_quantizer {
public:
    pvq_shape_quantizer(std::size_t dim, std::size_t pulses, search_options options = {})
        : dim_(dim), pulses_(pulses), options_(options) {
        if (dim == 0) throw invalid_argument("pvq_shape_quantizer: dimension N must be >= 1, got 0");
        if (pulses == 0 || pulses > (1u << 24))
            throw invalid_argument(fmt::format("pvq_shape_quantizer: pulses K = {} must be in [1, 2^24]", pulses));
    }
    std::size_t dim() const noexcept { return dim_; }
    std::size_t pulses() const noexcept { return pulses_; }
    // x: dim floats, point: dim ints (out). See pvq_search.
    void quantize(std::span<const float> x, std::span<int> point) const {
        if (x.size() != dim_)
            throw invalid_argument(fmt::format("pvq_shape_quantizer: vector has {} entries, N = {}", x.size(), dim_));
        pvq_search(x, static_cast<int>(pulses_), point, options_);
    }

private:
    std::size_t dim_;
    std::size_t pulses_;
    search_options options_;
};

}  // namespace svq
