// AVX-512 BW kernels of the trellis codec: 16 states read at once (one
// 16-byte load broadcast to the four 128-bit lanes, a byte shuffle, a
// variable shift), their codes in integer lanes, and the two passes of a
// Viterbi step 16 states at a time. Each gives the bits of its portable
// counterpart in kernels/trellis.hpp (tests/test_trellis.cpp), except
// trellis_dot_avx512, whose sum runs in another order. Included by
// kernels/trellis.hpp after trellis_lanes; compiles to nothing where the
// build does not enable AVX-512 F and BW (SVQ_KERNELS_AVX512BW).
#pragma once

#include <svq/kernels/avx512/avx512bw.hpp>  // SVQ_KERNELS_AVX512BW

#include <cstddef>
#include <cstdint>
#include <limits>

#if SVQ_KERNELS_AVX512BW

#include <immintrin.h>

namespace svq::detail {

SVQ_GCC_AVX512_WARNINGS_OFF

// The codes of the 16 weights of block m, given mb = m bits64 (the block
// starts at bit mb / 4, with lane offsets of phase mb mod 4).
struct trellis_block_reader {
    const trellis_lanes& lanes;
    __m512i mask;
    __m512i mul = _mm512_set1_epi32(static_cast<int>(trellis_code_mul));
    __m512i add = _mm512_set1_epi32(static_cast<int>(trellis_code_add));
    __m512i ones8 = _mm512_set1_epi8(1);
    __m512i ones16 = _mm512_set1_epi16(1);
    __m512i mean = _mm512_set1_epi32(510);

    trellis_block_reader(const trellis_lanes& l, unsigned L) noexcept
        : lanes(l), mask(_mm512_set1_epi32(static_cast<int>((std::uint32_t{1} << L) - 1u))) {}

    __m512i operator()(const std::uint8_t* p, std::size_t mb) const noexcept {
        const std::size_t bit = mb >> 2;
        const std::size_t pattern = 8 * (mb & 3) + (bit & 7);
        const __m512i bytes =
            _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + (bit >> 3))));
        const __m512i words =
            _mm512_shuffle_epi8(bytes, _mm512_load_si512(reinterpret_cast<const void*>(lanes.shuffle[pattern])));
        const __m512i s = _mm512_and_si512(
            _mm512_srlv_epi32(words, _mm512_load_si512(reinterpret_cast<const void*>(lanes.shift[pattern]))), mask);
        const __m512i x = _mm512_add_epi32(_mm512_mullo_epi32(s, mul), add);
        // Byte sums: pairs in int16 (unsigned bytes times signed ones), then the two pairs in int32.
        return _mm512_sub_epi32(_mm512_madd_epi16(_mm512_maddubs_epi16(x, ones8), ones16), mean);
    }
};

// trellis_decode_portable<H16>; first: a multiple of 16. H16: the four
// in-block stages on the codes as floats, each a lane permutation and one
// fused multiply-add partner +- own (every value an integer below 2^14:
// exact, the integers' results); lanes with bit k of their index set hold b
// and need a - b = partner - own.
template <bool H16>
inline void trellis_decode_avx512(const trellis_lanes& lanes, const std::uint8_t* p, std::size_t first,
                                  std::size_t blocks, unsigned bits64, unsigned L, float factor, float* out) noexcept {
    const trellis_block_reader read(lanes, L);
    const __m512 f = _mm512_set1_ps(factor), one = _mm512_set1_ps(1.0f), minus = _mm512_set1_ps(-1.0f);
    [[maybe_unused]] const __m512 s1 = _mm512_mask_blend_ps(0xAAAA, one, minus), s2 = _mm512_mask_blend_ps(0xCCCC, one, minus),
                                  s4 = _mm512_mask_blend_ps(0xF0F0, one, minus), s8 = _mm512_mask_blend_ps(0xFF00, one, minus);
    std::size_t mb = first / 16 * bits64;
    for (std::size_t j = 0; j < blocks; ++j, mb += bits64) {
        __m512 x = _mm512_cvtepi32_ps(read(p, mb));
        if constexpr (H16) {
            x = _mm512_fmadd_ps(x, s1, _mm512_permute_ps(x, 0xB1));        // lanes i ^ 1
            x = _mm512_fmadd_ps(x, s2, _mm512_permute_ps(x, 0x4E));        // lanes i ^ 2
            x = _mm512_fmadd_ps(x, s4, _mm512_shuffle_f32x4(x, x, 0xB1));  // lanes i ^ 4
            x = _mm512_fmadd_ps(x, s8, _mm512_shuffle_f32x4(x, x, 0x4E));  // lanes i ^ 8
        }
        _mm512_storeu_ps(out + 16 * j, _mm512_mul_ps(x, f));
    }
}

inline float trellis_dot_avx512(const trellis_lanes& lanes, const std::uint8_t* p, std::size_t first,
                                std::size_t blocks, unsigned bits64, unsigned L, const float* x) noexcept {
    const trellis_block_reader read(lanes, L);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    std::size_t mb = first / 16 * bits64, j = 0;
    for (; j + 2 <= blocks; j += 2, mb += 2 * bits64) {
        acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(read(p, mb)), _mm512_loadu_ps(x + 16 * j), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(read(p, mb + bits64)), _mm512_loadu_ps(x + 16 * j + 16), acc1);
    }
    if (j < blocks) acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(read(p, mb)), _mm512_loadu_ps(x + 16 * j), acc0);
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

// trellis_min_portable for L - k >= 4 (whole vectors of x).
inline float trellis_min_avx512(const float* cost, unsigned L, unsigned k, float* minprev,
                                std::uint8_t* back) noexcept {
    const std::size_t P = std::size_t{1} << (L - k), U = std::size_t{1} << k;
    __m512 least = _mm512_set1_ps(std::numeric_limits<float>::infinity());
    // Two vectors of x at a time: the compare-and-blend chains over u of the
    // two overlap.
    const auto step = [&](__m512& m, __m512i& a, std::size_t u, std::size_t x) {
        const __m512 c = _mm512_loadu_ps(cost + u * P + x);
        const __mmask16 lower = _mm512_cmp_ps_mask(c, m, _CMP_LT_OQ);
        m = _mm512_mask_blend_ps(lower, m, c);
        a = _mm512_mask_blend_epi32(lower, a, _mm512_set1_epi32(static_cast<int>(u)));
    };
    const auto finish = [&](__m512 m, __m512i a, std::size_t x) {
        _mm512_storeu_ps(minprev + x, m);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(back + x), _mm512_cvtepi32_epi8(a));
        least = _mm512_min_ps(least, m);
    };
    std::size_t x = 0;
    for (; x + 32 <= P; x += 32) {
        __m512 m0 = _mm512_loadu_ps(cost + x), m1 = _mm512_loadu_ps(cost + x + 16);
        __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
        for (std::size_t u = 1; u < U; ++u) {
            step(m0, a0, u, x);
            step(m1, a1, u, x + 16);
        }
        finish(m0, a0, x);
        finish(m1, a1, x + 16);
    }
    if (x < P) {  // P = 16
        __m512 m = _mm512_loadu_ps(cost + x);
        __m512i a = _mm512_setzero_si512();
        for (std::size_t u = 1; u < U; ++u) step(m, a, u, x);
        finish(m, a, x);
    }
    return _mm512_reduce_min_ps(least);
}

// trellis_add_portable for L >= 4. Reads 16 floats from minprev + (s >> k):
// minprev needs 16 floats past its 2^(L - k).
inline void trellis_add_avx512(const float* minprev, float least, const float* z, float w, float c, unsigned L,
                               unsigned k, float* out) noexcept {
    const std::size_t S = std::size_t{1} << L;
    const __m512i spread = _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             static_cast<unsigned>(k));
    const __m512 vl = _mm512_set1_ps(least), vc = _mm512_set1_ps(c), vw = _mm512_set1_ps(w);
    for (std::size_t s = 0; s < S; s += 16) {
        const __m512 mp = _mm512_sub_ps(_mm512_permutexvar_ps(spread, _mm512_loadu_ps(minprev + (s >> k))), vl);
        const __m512 d = _mm512_fnmadd_ps(vc, _mm512_loadu_ps(z + s), vw);
        _mm512_storeu_ps(out + s, _mm512_fmadd_ps(d, d, mp));
    }
}

SVQ_GCC_AVX512_WARNINGS_ON

}  // namespace svq::detail

#endif
