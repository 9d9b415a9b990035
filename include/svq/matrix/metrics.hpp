// Error measures used everywhere in svq (docs/design.md, "How svq measures").
#pragma once

#include <svq/concepts.hpp>
#include <svq/error.hpp>

#include <fmt/format.h>

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <vector>

namespace svq {

// sum (x - xhat)^2 / n, accumulated in double.
inline double mean_squared_error(std::span<const float> x, std::span<const float> xhat) {
    if (x.size() != xhat.size() || x.empty())
        throw invalid_argument(fmt::format("mean_squared_error: sizes {} and {} (need equal and non-zero)", x.size(),
                                           xhat.size()));
    double e = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double d = static_cast<double>(x[i]) - static_cast<double>(xhat[i]);
        e += d * d;
    }
    return e / static_cast<double>(x.size());
}

// SQNR in dB: 10 log10(sum x^2 / sum (x - xhat)^2). +infinity for an exact
// reconstruction of a non-zero x; throws svq::invalid_argument for x == 0.
inline double sqnr_db(std::span<const float> x, std::span<const float> xhat) {
    if (x.size() != xhat.size() || x.empty())
        throw invalid_argument(fmt::format("sqnr_db: sizes {} and {} (need equal and non-zero)", x.size(), xhat.size()));
    double signal = 0.0, noise = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double d = static_cast<double>(x[i]) - static_cast<double>(xhat[i]);
        signal += static_cast<double>(x[i]) * x[i];
        noise += d * d;
    }
    if (!(signal > 0.0)) throw invalid_argument("sqnr_db: the reference signal is all zeros");
    if (noise == 0.0) return std::numeric_limits<double>::infinity();
    return 10.0 * std::log10(signal / noise);
}

// The SQNR of any quantized matrix against the weights it came from
// (w: rows * cols, row-major; the quantized matrix's reconstruction).
template <QuantizedMatrix M>
double sqnr_db(std::span<const float> w, const M& q) {
    if (w.size() != q.rows() * q.cols())
        throw invalid_argument(fmt::format("sqnr_db: {} weights for a {} x {} quantized matrix", w.size(), q.rows(), q.cols()));
    const std::vector<float> back = q.dequantize();
    return sqnr_db(w, std::span<const float>(back));
}

// Shannon's bound for iid Gaussian data: 6.02 dB per bit (20 log10 2).
inline double gaussian_sqnr_bound_db(double bits_per_weight) noexcept { return 20.0 * std::log10(2.0) * bits_per_weight; }

}  // namespace svq
