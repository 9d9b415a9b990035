// Fast Walsh-Hadamard transform (orthonormal), the O(n log n) core of the
// randomized Hadamard rotation in hadamard_rotation.hpp.
//
// H_n (Sylvester order: H_1 = [1], H_2n = [[H_n, H_n], [H_n, -H_n]]) is
// symmetric with H_n H_n = n I, so H_n / sqrt(n) is orthogonal and its own
// inverse. The transform runs log2(n) butterfly stages (half = 1, 2, 4, ...),
// each replacing (a, b) = (x[j], x[j + half]) by (a + b, a - b), then
// multiplies every element once by 1/sqrt(n).
//
// The scalar body and the xsimd body perform exactly the same additions,
// subtractions and the one final multiply on the same operands, so their
// results agree bit for bit (tests/test_rotate_fwht.cpp checks it).
#pragma once

#include <svq/error.hpp>
#include <svq/simd/compat.hpp>

#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstddef>
#include <span>

namespace svq {
namespace detail {

// The orthonormal scale 1/sqrt(n), rounded once to T; both bodies use this value.
template <class T>
inline T fwht_scale(std::size_t n) noexcept {
    return static_cast<T>(1.0 / std::sqrt(static_cast<double>(n)));
}

// Reference body. data: n values, n a power of two (n >= 1).
template <class T>
inline void fwht_scalar(T* data, std::size_t n) noexcept {
    for (std::size_t half = 1; half < n; half *= 2) {
        for (std::size_t base = 0; base < n; base += 2 * half) {
            for (std::size_t j = base; j < base + half; ++j) {
                const T a = data[j];
                const T b = data[j + half];
                data[j] = a + b;
                data[j + half] = a - b;
            }
        }
    }
    const T scale = fwht_scale<T>(n);
    for (std::size_t i = 0; i < n; ++i) data[i] *= scale;
}

// Lane i of a batch pairs with lane i ^ Half in the butterfly stage of that half-width.
template <unsigned Half>
struct fwht_partner_lane {
    static constexpr unsigned get(unsigned index, unsigned /*size*/) noexcept { return index ^ Half; }
};

// Butterfly stages whose partners lie inside one batch (half < lanes), in
// ascending order. A lane with (i & half) == 0 holds a and needs a + b; the
// partner lane holds b and needs a - b. Both are partner + (+-1) * own:
// b + a is a + b exactly (addition commutes), and a + (-b) is a - b exactly
// (IEEE defines subtraction that way), so this matches the scalar body.
// signs[k]: the +-1 lane pattern of stage half = 2^k.
template <class Arch, class T, unsigned Half = 1>
inline xsimd::batch<T, Arch> fwht_in_register(xsimd::batch<T, Arch> x, const xsimd::batch<T, Arch>* signs) noexcept {
    if constexpr (Half < xsimd::batch<T, Arch>::size) {
        const auto partner = simd::swizzle_lanes<fwht_partner_lane<Half>>(x);
        x = partner + x * signs[0];
        return fwht_in_register<Arch, T, Half * 2>(x, signs + 1);
    } else {
        return x;
    }
}

// SIMD body. data: n values, n a power of two (n >= 1). Transforms shorter
// than one batch take the scalar body. Pass 1 runs the in-batch stages on
// each batch; the remaining stages (half >= lanes) run two at a time
// (radix 4: four loads, two levels of butterflies, four stores), which halves
// the memory traffic of radix 2 and leaves each element's operations as in
// the scalar body. The scale is applied in the last pass.
template <class Arch, class T>
inline void fwht_kernel(Arch, T* data, std::size_t n) noexcept {
    using batch = xsimd::batch<T, Arch>;
    constexpr std::size_t lanes = batch::size;
    if (n < lanes) {
        fwht_scalar(data, n);
        return;
    }
    const T scale_value = fwht_scale<T>(n);
    const batch scale(scale_value);

    // +-1 patterns of the in-batch stages: stage k negates the lanes with bit k set.
    constexpr std::size_t in_register_stages = std::bit_width(lanes) - 1;
    batch signs[in_register_stages > 0 ? in_register_stages : 1];
    for (std::size_t stage = 0; stage < in_register_stages; ++stage) {
        alignas(Arch::alignment()) T pattern[lanes];
        for (std::size_t lane = 0; lane < lanes; ++lane) pattern[lane] = (lane >> stage) & 1U ? T(-1) : T(1);
        signs[stage] = batch::load_aligned(pattern);
    }
    for (std::size_t i = 0; i < n; i += lanes) {
        batch x = fwht_in_register<Arch, T>(batch::load_unaligned(data + i), signs);
        if (n == lanes) x = x * scale;
        x.store_unaligned(data + i);
    }

    std::size_t half = lanes;
    for (; 4 * half <= n; half *= 4) {
        const bool last = 4 * half == n;
        for (std::size_t base = 0; base < n; base += 4 * half) {
            for (std::size_t j = base; j < base + half; j += lanes) {
                const batch a0 = batch::load_unaligned(data + j);
                const batch a1 = batch::load_unaligned(data + j + half);
                const batch a2 = batch::load_unaligned(data + j + 2 * half);
                const batch a3 = batch::load_unaligned(data + j + 3 * half);
                const batch b0 = a0 + a1;
                const batch b1 = a0 - a1;
                const batch b2 = a2 + a3;
                const batch b3 = a2 - a3;
                batch c0 = b0 + b2;
                batch c1 = b1 + b3;
                batch c2 = b0 - b2;
                batch c3 = b1 - b3;
                if (last) {
                    c0 = c0 * scale;
                    c1 = c1 * scale;
                    c2 = c2 * scale;
                    c3 = c3 * scale;
                }
                c0.store_unaligned(data + j);
                c1.store_unaligned(data + j + half);
                c2.store_unaligned(data + j + 2 * half);
                c3.store_unaligned(data + j + 3 * half);
            }
        }
    }
    if (2 * half == n) {  // one stage left over (odd number of cross-batch stages)
        for (std::size_t j = 0; j < half; j += lanes) {
            const batch a = batch::load_unaligned(data + j);
            const batch b = batch::load_unaligned(data + j + half);
            ((a + b) * scale).store_unaligned(data + j);
            ((a - b) * scale).store_unaligned(data + j + half);
        }
    }
}

// Dispatch once: the SIMD body where xsimd found an architecture, else scalar.
template <class T>
inline void fwht_dispatch(T* data, std::size_t n) noexcept {
    if constexpr (simd::has_simd) {
        fwht_kernel(simd::default_arch{}, data, n);
    } else {
        fwht_scalar(data, n);
    }
}

inline void check_fwht_size(std::size_t n) {
    if (!std::has_single_bit(n)) {
        throw invalid_argument(fmt::format("fwht: length n={} is not a power of two", n));
    }
}

}  // namespace detail

// In-place orthonormal Walsh-Hadamard transform: data <- H_n data / sqrt(n).
// data: n floats, n a power of two (1, 2, 4, ...); throws svq::invalid_argument otherwise.
// Applying it twice gives back the input (up to rounding).
inline void fwht(std::span<float> data) {
    detail::check_fwht_size(data.size());
    detail::fwht_dispatch(data.data(), data.size());
}

// Same for doubles (used for Hessians). data: n doubles, n a power of two.
inline void fwht(std::span<double> data) {
    detail::check_fwht_size(data.size());
    detail::fwht_dispatch(data.data(), data.size());
}

}  // namespace svq
