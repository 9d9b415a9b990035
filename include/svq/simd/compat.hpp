// The one place that knows which xsimd version svq is built against.
// Debian 12 ships xsimd 8.1; upstream is at 13/14. Names that changed
// between them (hadd -> reduce_add, generic -> common, bitwise_cast's
// template argument) are wrapped here and nowhere else.
#pragma once

#include <xsimd/xsimd.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#ifndef XSIMD_VERSION_MAJOR
#error "svq needs xsimd >= 8"
#endif

namespace svq::simd {

// Architecture svq kernels are compiled for (chosen at compile time by -m flags).
using default_arch = xsimd::default_arch;

// True when the build has a vector architecture; false when xsimd found none
// (then default_arch is xsimd::unavailable and kernels take their scalar body).
inline constexpr bool has_simd = default_arch::supported();

// Lanes of a batch of T on Arch, 0 when Arch is xsimd::unavailable. (Outside a
// template even the discarded branch of `if constexpr` names
// batch<T, unavailable>, which xsimd rejects; this keeps it in one.)
template <class T, class Arch = default_arch>
constexpr std::size_t lanes_of() noexcept {
    if constexpr (Arch::supported()) return xsimd::batch<T, Arch>::size;
    else return 0;
}

// Horizontal sum of a batch.
template <class T, class Arch>
inline T reduce_add(const xsimd::batch<T, Arch>& b) noexcept {
#if XSIMD_VERSION_MAJOR >= 11
    return xsimd::reduce_add(b);
#else
    return xsimd::hadd(b);
#endif
}

// Horizontal maximum of a batch (xsimd 8 has no reduce_max: spill and scan).
template <class T, class Arch>
inline T reduce_max(const xsimd::batch<T, Arch>& b) noexcept {
#if XSIMD_VERSION_MAJOR >= 11
    return xsimd::reduce_max(b);
#else
    alignas(Arch::alignment()) T lanes[xsimd::batch<T, Arch>::size];
    b.store_aligned(lanes);
    T m = lanes[0];
    for (std::size_t i = 1; i < xsimd::batch<T, Arch>::size; ++i) m = lanes[i] > m ? lanes[i] : m;
    return m;
#endif
}

// Reinterpret the bits of a batch as another element type.
template <class To, class From, class Arch>
inline xsimd::batch<To, Arch> bitwise_cast(const xsimd::batch<From, Arch>& b) noexcept {
#if XSIMD_VERSION_MAJOR >= 11
    return xsimd::bitwise_cast<To>(b);
#else
    return xsimd::bitwise_cast<xsimd::batch<To, Arch>>(b);
#endif
}

// GCC 12's AVX-512 intrinsics (permutes, conversions, gathers, integer
// reductions) build pass-through operands from self-initialised or undefined
// variables, which -Wuninitialized / -Wmaybe-uninitialized report at every
// inlined call (GCC bug 105593); the values are never read. These two macros
// bracket code that calls such intrinsics and silence those two warnings only.
#if defined(__GNUC__) && !defined(__clang__)
#define SVQ_GCC_AVX512_WARNINGS_OFF                                                      \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wuninitialized\"") \
        _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define SVQ_GCC_AVX512_WARNINGS_ON _Pragma("GCC diagnostic pop")
#else
#define SVQ_GCC_AVX512_WARNINGS_OFF
#define SVQ_GCC_AVX512_WARNINGS_ON
#endif

// Permute the lanes of a batch by a compile-time pattern: lane i of the result is
// lane G::get(i, size) of b. G is a generator type with
// `static constexpr unsigned get(unsigned index, unsigned size)`.
// make_batch_constant took the batch type before xsimd 13, <T, A, G> in 13 and
// <T, G, A> from 14 on.
// (GCC 12's permute intrinsics: see SVQ_GCC_AVX512_WARNINGS_OFF.)
SVQ_GCC_AVX512_WARNINGS_OFF
template <class G, class T, class Arch>
inline xsimd::batch<T, Arch> swizzle_lanes(const xsimd::batch<T, Arch>& b) noexcept {
    using index_type = xsimd::as_unsigned_integer_t<T>;
#if XSIMD_VERSION_MAJOR >= 14
    return xsimd::swizzle(b, xsimd::make_batch_constant<index_type, G, Arch>());
#elif XSIMD_VERSION_MAJOR >= 13
    return xsimd::swizzle(b, xsimd::make_batch_constant<index_type, Arch, G>());
#else
    return xsimd::swizzle(b, xsimd::make_batch_constant<xsimd::batch<index_type, Arch>, G>());
#endif
}
SVQ_GCC_AVX512_WARNINGS_ON

// int32 -> float lane conversion (GCC 12's conversion intrinsic: see
// SVQ_GCC_AVX512_WARNINGS_OFF).
SVQ_GCC_AVX512_WARNINGS_OFF
template <class Arch>
inline xsimd::batch<float, Arch> to_float(const xsimd::batch<std::int32_t, Arch>& b) noexcept {
    return xsimd::batch_cast<float>(b);
}
SVQ_GCC_AVX512_WARNINGS_ON

// Name of the architecture, for benchmark and demo output.
inline std::string_view arch_name() noexcept {
    if constexpr (has_simd) return default_arch::name();
    else return "scalar";
}

}  // namespace svq::simd
