// The portable kernels of the matrix decoder (kernels/gemv.hpp): xsimd where
// a kernel is vectorised for every architecture, plain C++ elsewhere. They
// define the floats: every instruction-set-specific kernel beside them
// (kernels/avx512/) computes the same values bit for bit, and
// tests/test_simd_kernels.cpp checks that it does. kernels/dense.hpp chooses,
// at compile time, which of them the decoder calls. docs/performance.md,
// "The dense path (speed configurations)", describes the steps.
#pragma once

#include <svq/format/row_format.hpp>
#include <svq/simd/compat.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace svq::detail {

// sum_i float(y_i) * x_i, y: n ints, x: n floats (lane-wise partial sums, then
// a fixed-order reduction: deterministic, not the scalar order).
template <class Arch>
float pulse_dot_kernel(Arch, const int* y, const float* x, std::size_t n) noexcept {
    using ib = xsimd::batch<std::int32_t, Arch>;
    using fb = xsimd::batch<float, Arch>;
    constexpr std::size_t lanes = fb::size;
    fb acc(0.0f);
    std::size_t i = 0;
    for (; i + lanes <= n; i += lanes)
        acc = xsimd::fma(simd::to_float(ib::load_unaligned(y + i)), fb::load_unaligned(x + i), acc);
    float s = simd::reduce_add(acc);
    for (; i < n; ++i) s += static_cast<float>(y[i]) * x[i];
    return s;
}

inline float pulse_dot(const int* y, const float* x, std::size_t n) noexcept {
    if constexpr (simd::default_arch::supported()) {
        return pulse_dot_kernel(simd::default_arch{}, y, x, n);
    } else {
        float s = 0.0f;
        for (std::size_t i = 0; i < n; ++i) s += static_cast<float>(y[i]) * x[i];
        return s;
    }
}

// sum_i a_i * b_i over n floats (lane-wise fused multiply-adds, then a fixed-order reduction).
template <class Arch>
float float_dot_kernel(Arch, const float* a, const float* b, std::size_t n) noexcept {
    using fb = xsimd::batch<float, Arch>;
    constexpr std::size_t lanes = fb::size;
    fb acc0(0.0f), acc1(0.0f);
    std::size_t i = 0;
    for (; i + 2 * lanes <= n; i += 2 * lanes) {
        acc0 = xsimd::fma(fb::load_unaligned(a + i), fb::load_unaligned(b + i), acc0);
        acc1 = xsimd::fma(fb::load_unaligned(a + i + lanes), fb::load_unaligned(b + i + lanes), acc1);
    }
    for (; i + lanes <= n; i += lanes) acc0 = xsimd::fma(fb::load_unaligned(a + i), fb::load_unaligned(b + i), acc0);
    float s = simd::reduce_add(acc0 + acc1);
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

inline float float_dot(const float* a, const float* b, std::size_t n) noexcept {
    if constexpr (simd::default_arch::supported()) {
        return float_dot_kernel(simd::default_arch{}, a, b, n);
    } else {
        float s = 0.0f;
        for (std::size_t i = 0; i < n; ++i) s += a[i] * b[i];
        return s;
    }
}

// Float buffers on 64-byte boundaries: the row buffers and the GEMV's
// vectors are read a 64-byte vector at a time, and a load split across two
// cache lines costs twice (the heap's 16-byte alignment varies by run).
using aligned_floats = std::vector<float, xsimd::aligned_allocator<float, 64>>;

// The row streamer's line writer (kernels/dense.hpp, row_streamer) without
// streaming stores: a line of 16 floats by plain copies, any destination
// alignment, nothing to fence.
struct copy_lines_portable {
    static constexpr std::size_t dst_alignment = 1;  // bytes; 1: the writer takes any address
    static void write(const float* src, float* dst) noexcept { std::copy(src, src + 16, dst); }
    static void fence() noexcept {}
};

// Dense path, the second part of group_factor_of: unit_factor(level_c, E,
// norm) for every gain code c and group energy E <= K^2 (||y||^2 <=
// (sum |y_i|)^2), so a group's factor is float(s) * one table load instead
// of a double division and square root. table is empty where it would pass
// max_entries (many gain bits and pulses); at() then computes the same value.
struct dense_units {
    static constexpr std::size_t max_entries = std::size_t{1} << 18;  // 1 MB
    std::vector<double> levels;
    double norm = 1.0;
    std::size_t stride = 0;    // K^2 + 1
    std::vector<float> table;  // [c * stride + E]

    dense_units() = default;
    dense_units(std::span<const double> gain_levels, std::size_t pulses, double n)
        : levels(gain_levels.begin(), gain_levels.end()), norm(n), stride(pulses * pulses + 1) {
        if (levels.size() * stride > max_entries) return;
        table.resize(levels.size() * stride);
        for (std::size_t c = 0; c < levels.size(); ++c)
            for (std::size_t e = 0; e < stride; ++e)
                table[c * stride + e] = unit_factor(levels[c], static_cast<std::int64_t>(e), norm);
    }
    float at(std::uint32_t code, std::int64_t energy) const noexcept {
        return table.empty() ? unit_factor(levels[code], energy, norm)
                             : table[code * stride + static_cast<std::size_t>(energy)];
    }
};

// Group j's factor float(s) * units.at(codes[j], E_j), E_j the energy of its
// int8 pulses (y8: groups * n): group_factor_of's float.
inline void dense_factors_scalar(const std::int8_t* y8, const std::uint32_t* codes, std::size_t groups,
                                 std::size_t n, const dense_units& units, float scale, float* factors) noexcept {
    for (std::size_t j = 0; j < groups; ++j, y8 += n) {
        std::int64_t e = 0;
        for (std::size_t i = 0; i < n; ++i) e += y8[i] * y8[i];
        factors[j] = scale * units.at(codes[j], e);
    }
}

// Dense path, no integer-stage rotation: out = float(y_i) * factor (the
// reference decoder's floats). y8: groups * n int8, out: groups * n floats,
// factors: groups floats of scratch. This and integer_stage_dense_portable
// are always inlined, so that the dispatchers of kernels/dense.hpp hold the
// portable body itself, with no call in between, on every machine.
[[gnu::always_inline]] inline void scale_dense_groups8_portable(const std::int8_t* y8, const std::uint32_t* codes,
                                                                const dense_units& units, float scale,
                                                                std::size_t groups, std::size_t n, float* factors,
                                                                float* out) noexcept {
    dense_factors_scalar(y8, codes, groups, n, units, scale, factors);
    for (std::size_t j = 0; j < groups; ++j, y8 += n, out += n) {
        for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(y8[i]) * factors[j];
    }
}

// Dense path with the integer-stage rotation (detail::integer_stage_inverse,
// bit for bit): y8: cols int8 (only read here; the AVX-512 kernel transforms
// it in place), factors: cols / n floats of scratch, y: cols ints of scratch.
[[gnu::always_inline]] inline void integer_stage_dense_portable(const std::int8_t* y8, const std::uint32_t* codes,
                                                                const dense_units& units, float scale, std::size_t n,
                                                                std::size_t cols, const float* signs, float* factors,
                                                                float* out, int* y) noexcept {
    dense_factors_scalar(y8, codes, cols / n, n, units, scale, factors);
    for (std::size_t i = 0; i < cols; ++i) y[i] = y8[i];
    integer_stage_inverse(y, factors, n, cols, signs, out);
}

}  // namespace svq::detail
