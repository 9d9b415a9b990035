// Integer pulses to floats and back: the scaling every PVQ decoder applies
// to a point y of the pyramid (float(y_i) * factor), its exact energy
// ||y||^2 and the MSE-optimal gain of a vector x on y's direction.
#pragma once

#include <svq/simd/compat.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace svq {

namespace detail {

// out[i] = float(y[i]) * scale for i < n. y: n ints, out: n floats.
// Exact int -> float conversion (|y_i| < 2^24) then one multiply: the SIMD and
// scalar bodies give bit-identical floats.
inline void scale_pulses_scalar(const int* y, float scale, float* out, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(y[i]) * scale;
}

template <class Arch>
void scale_pulses_kernel(Arch, const int* y, float scale, float* out, std::size_t n) noexcept {
    using ib = xsimd::batch<std::int32_t, Arch>;
    using fb = xsimd::batch<float, Arch>;
    constexpr std::size_t lanes = fb::size;
    const fb s(scale);
    std::size_t i = 0;
    for (; i + lanes <= n; i += lanes) {
        const fb v = simd::to_float(ib::load_unaligned(y + i));
        (v * s).store_unaligned(out + i);
    }
    scale_pulses_scalar(y + i, scale, out + i, n - i);
}

template <class Arch = simd::default_arch>
void scale_pulses(const int* y, float scale, float* out, std::size_t n) noexcept {
    if constexpr (Arch::supported())
        scale_pulses_kernel(Arch{}, y, scale, out, n);
    else
        scale_pulses_scalar(y, scale, out, n);
}

// sum y_i^2, exact.
inline std::int64_t pulse_energy(const int* y, std::size_t n) noexcept {
    std::int64_t s = 0;
    for (std::size_t i = 0; i < n; ++i) s += static_cast<std::int64_t>(y[i]) * y[i];
    return s;
}

// MSE-optimal gain x . y / ||y|| (double accumulation, fixed order).
inline double optimal_gain(const float* x, const int* y, std::size_t n) noexcept {
    double xy = 0.0;
    for (std::size_t i = 0; i < n; ++i) xy += static_cast<double>(x[i]) * y[i];
    const auto yy = pulse_energy(y, n);
    return yy > 0 ? xy / std::sqrt(static_cast<double>(yy)) : 0.0;
}

}  // namespace detail

}  // namespace svq
