// IEEE 754 binary16 conversion for stored scales (C++20 has no std::float16_t).
// Round to nearest even; overflow saturates to the largest finite half
// (65504) because a scale must stay finite; subnormals are kept.
// bfloat16 (the top 16 bits of a float) for checkpoints stored in BF16.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace svq {

inline std::uint16_t float_to_half(float value) noexcept {
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
    const std::uint32_t sign = (bits >> 16) & 0x8000u;
    const float a = std::fabs(value);
    if (std::isnan(value)) return static_cast<std::uint16_t>(sign | 0x7e00u);
    if (a >= 65520.0f) return static_cast<std::uint16_t>(sign | 0x7bffu);  // saturate (65504 is the largest half)
    if (a < 6.103515625e-05f) {  // subnormal half: a multiple of 2^-24
        const auto q = static_cast<std::uint32_t>(std::nearbyint(a * 16777216.0f));  // round-to-even by default mode
        return static_cast<std::uint16_t>(sign | q);
    }
    const std::uint32_t mag = bits & 0x7fffffffu;
    // Rebias exponent (127 -> 15) and round the 23-bit mantissa to 10 bits, ties to even.
    std::uint32_t h = ((mag >> 23) - 112u) << 10 | ((mag >> 13) & 0x3ffu);
    const std::uint32_t rest = mag & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // carries into the exponent correctly
    if (h >= 0x7c00u) h = 0x7bffu;
    return static_cast<std::uint16_t>(sign | h);
}

inline float half_to_float(std::uint16_t h) noexcept {
    // Branch-free (selects only, so a conversion loop vectorises): the
    // exponent and mantissa shifted into place and rebiased (15 -> 127);
    // infinity and NaN (exponent 31) rebiased once more to exponent 255;
    // zero and subnormals (exponent 0) are the integer mantissa * 2^-24, exact.
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t em = h & 0x7fffu;
    std::uint32_t bits = (em << 13) + (112u << 23);
    bits += em >= 0x7c00u ? (112u << 23) : 0u;
    const std::uint32_t small = std::bit_cast<std::uint32_t>(static_cast<float>(em) * 0x1p-24f);
    return std::bit_cast<float>((em < 0x0400u ? small : bits) | sign);
}

// bfloat16 -> float: exact (the bits are the float's top half).
inline float bf16_to_float(std::uint16_t b) noexcept { return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16); }

// float -> bfloat16, round to nearest even; NaN stays NaN, overflow rounds to infinity.
inline std::uint16_t float_to_bf16(float value) noexcept {
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
    if (std::isnan(value)) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);
    return static_cast<std::uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

}  // namespace svq
