// AVX-512 BW kernels of the matrix decoder's dense path (docs/performance.md,
// "The dense path (speed configurations)", steps 4 to 6): the factors, the
// scaling and the integer-stage rotation of a row of int8 pulses for groups
// of N = 16 and 32. Each computes the floats of its portable counterpart in
// kernels/portable.hpp bit for bit (dense_factors_scalar,
// scale_dense_groups8_portable, integer_stage_dense_portable;
// tests/test_simd_kernels.cpp checks it); kernels/dense.hpp calls them. The
// file compiles to nothing where the build does not enable AVX-512 F and BW;
// SVQ_KERNELS_AVX512BW says whether it did.
#pragma once

#include <svq/kernels/portable.hpp>
#include <svq/rotate/fwht.hpp>
#include <svq/simd/compat.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#define SVQ_KERNELS_AVX512BW 1

#include <immintrin.h>

namespace svq::detail {

// AVX-512 BW for n = 16 and 32 (xsimd 8.1 has no int8 widening, hence
// intrinsics): energies of 64 bytes at once (|y| squared and summed by pairs
// in int16: a pair holds at most K^2 <= 127^2; then by fours in int32, then
// within each group), eight factors per vector as float(s) times a gather
// from units' table (the floats of dense_factors_scalar).
SVQ_GCC_AVX512_WARNINGS_OFF
// after(first, count): called once the factors of groups [first, first + count)
// are written (blocks of 8, then the rest), so the caller's work on those
// groups overlaps the next block's gathers.
template <std::size_t N, class After>
inline void dense_factors_avx512(const std::int8_t* y8, const std::uint32_t* codes, std::size_t groups,
                                 const dense_units& units, float scale, float* factors, After&& after) noexcept {
    static_assert(N == 16 || N == 32);
    if (units.table.empty()) {  // no table: the formula, group by group
        dense_factors_scalar(y8, codes, groups, N, units, scale, factors);
        after(std::size_t{0}, groups);
        return;
    }
    constexpr std::size_t per_vector = 64 / N;  // groups per 64 bytes
    const __m512i ones = _mm512_set1_epi16(1);
    const __m256i stride = _mm256_set1_epi32(static_cast<int>(units.stride));
    const __m256 scale8 = _mm256_set1_ps(scale);
    const auto fours = [&](const std::int8_t* p) {  // 16 int32: sums of squares of 4 consecutive pulses
        const __m512i a = _mm512_abs_epi8(_mm512_loadu_si512(p));
        return _mm512_madd_epi16(_mm512_maddubs_epi16(a, a), ones);
    };
    std::size_t j = 0;
    for (; j + 8 <= groups; j += 8) {
        alignas(64) std::int32_t e[16 * (8 / per_vector)];
        for (std::size_t v = 0; v < 8 / per_vector; ++v) {
            __m512i s4 = fours(y8 + (j + v * per_vector) * N);
            s4 = _mm512_add_epi32(s4, _mm512_shuffle_epi32(s4, _MM_PERM_BADC));
            s4 = _mm512_add_epi32(s4, _mm512_shuffle_epi32(s4, _MM_PERM_CDAB));  // every lane: its 16 pulses' sum
            if constexpr (N == 32) s4 = _mm512_add_epi32(s4, _mm512_shuffle_i32x4(s4, s4, _MM_PERM_CDAB));
            _mm512_store_si512(e + 16 * v, s4);
        }
        // Group g's energy sits at lane g * N / 4 of the stored words.
        const __m256i idx = _mm256_set_epi32(7 * N / 4, 6 * N / 4, 5 * N / 4, 4 * N / 4, 3 * N / 4, 2 * N / 4, N / 4, 0);
        const __m256i energy = _mm256_i32gather_epi32(e, idx, 4);
        const __m256i code = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + j));
        const __m256i entry = _mm256_add_epi32(_mm256_mullo_epi32(code, stride), energy);  // < max_entries
        _mm256_storeu_ps(factors + j, _mm256_mul_ps(scale8, _mm256_i32gather_ps(units.table.data(), entry, 4)));
        after(j, std::size_t{8});
    }
    dense_factors_scalar(y8 + j * N, codes + j, groups - j, N, units, scale, factors + j);
    if (j < groups) after(j, groups - j);
}

// Groups [first, first + count): out = float(y8_i) * factor of its group (n = 16 or 32).
inline void scale_dense8_avx512(const std::int8_t* y8, const float* factors, std::size_t first, std::size_t count,
                                std::size_t n, float* out) noexcept {
    for (std::size_t g = first; g < first + count; ++g) {
        const __m512 f = _mm512_set1_ps(factors[g]);
        for (std::size_t h = 0; h < n; h += 16) {
            const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(y8 + g * n + h));
            _mm512_storeu_ps(out + g * n + h, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), f));
        }
    }
}

// In place, for every group of N int8 pulses (N = 16 or 32; bytes a multiple
// of 64): y <- H_N y, the unnormalised butterfly stages half = 1 .. N/2 in
// exact int8 arithmetic (every partial sum is a signed sum of distinct pulses
// of one group, so |.| <= K <= 127). A stage: p = the partner lanes
// (i ^ half), lanes without bit `half` get x + p, lanes with it p - x.
template <std::size_t N>
class int8_group_hadamard_avx512 {
    static_assert(N == 16 || N == 32);

public:
    int8_group_hadamard_avx512() noexcept {
        alignas(64) std::int8_t pattern[4][64];
        for (std::size_t s = 0; s < 4; ++s)
            for (std::size_t i = 0; i < 64; ++i)
                pattern[s][i] = static_cast<std::int8_t>((i ^ (std::size_t{1} << s)) & 15);
        for (std::size_t s = 0; s < 4; ++s) p_[s] = _mm512_load_si512(pattern[s]);
    }
    // Bytes [from, to) of y, multiples of 64.
    void operator()(std::int8_t* y, std::size_t from, std::size_t to) const noexcept {
        const auto stage = [](__m512i x, __m512i partner, __mmask64 with_bit) {
            return _mm512_mask_sub_epi8(_mm512_add_epi8(x, partner), with_bit, partner, x);
        };
        for (std::size_t i = from; i < to; i += 64) {
            __m512i x = _mm512_loadu_si512(y + i);
            x = stage(x, _mm512_shuffle_epi8(x, p_[0]), 0xAAAAAAAAAAAAAAAAull);
            x = stage(x, _mm512_shuffle_epi8(x, p_[1]), 0xCCCCCCCCCCCCCCCCull);
            x = stage(x, _mm512_shuffle_epi8(x, p_[2]), 0xF0F0F0F0F0F0F0F0ull);
            x = stage(x, _mm512_shuffle_epi8(x, p_[3]), 0xFF00FF00FF00FF00ull);
            if constexpr (N == 32) x = stage(x, _mm512_shuffle_i64x2(x, x, 0xB1), 0xFFFF0000FFFF0000ull);
            _mm512_storeu_si512(y + i, x);
        }
    }

private:
    __m512i p_[4];
};

// The first float pass of the integer-stage rotation: stages half, ...,
// 2^(Stages-1) half (half = N, the group size) on float(z_i) * factor of
// its group, loaded from the int8 z; Last: the pass ends the transform and
// multiplies by the signs. The same operations, in the same order, as
// integer_stage_inverse's float stages.
template <std::size_t Stages, bool Last>
inline void int8_first_pass_avx512(const std::int8_t* z, const float* factors, unsigned group_shift,
                                   std::size_t cols, const float* signs, float* out) noexcept {
    using batch = xsimd::batch<float, xsimd::avx512bw>;
    constexpr std::size_t m = std::size_t{1} << Stages;
    const std::size_t half = std::size_t{1} << group_shift;
    for (std::size_t base = 0; base < cols; base += m * half) {
        for (std::size_t j = base; j < base + half; j += 16) {
            batch a[m];
#pragma GCC unroll 16
            for (std::size_t t = 0; t < m; ++t) {
                const std::size_t at = j + t * half;
                const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(z + at));
                // An explicitly rounded product: a plain one could be contracted with
                // the first butterfly's addition into a fused multiply-add.
                a[t] = batch(_mm512_mul_round_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)),
                                                 _mm512_set1_ps(factors[at >> group_shift]),
                                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            }
            butterflies<Stages>(a);
#pragma GCC unroll 16
            for (std::size_t t = 0; t < m; ++t) {
                batch v = a[t];
                if constexpr (Last) v = v * batch::load_unaligned(signs + j + t * half);
                v.store_unaligned(out + j + t * half);
            }
        }
    }
}

// The integer-stage rotation of a dense row (N = 16 or 32, cols a power of
// two, a multiple of 64): z = H_N y in int8, then the float stages from
// half = N, the first pass fused with the scaling. y8 is overwritten by z.
template <std::size_t N>
inline void integer_stage_dense_avx512(std::int8_t* y8, const std::uint32_t* codes, const dense_units& units,
                                       float scale, std::size_t cols, const float* signs, float* factors,
                                       float* out) noexcept {
    constexpr unsigned shift = N == 16 ? 4 : 5;
    const std::size_t float_stages = static_cast<std::size_t>(std::countr_zero(cols)) - shift;
    const std::size_t first = std::min<std::size_t>(float_stages, 4);
    const int8_group_hadamard_avx512<N> transform;
    dense_factors_avx512<N>(y8, codes, cols / N, units, scale, factors,
                            [&](std::size_t j, std::size_t count) { transform(y8, j * N, (j + count) * N); });
    const auto run = [&](auto st) {
        constexpr std::size_t S = decltype(st)::value;
        if (first == float_stages)
            int8_first_pass_avx512<S, true>(y8, factors, shift, cols, signs, out);
        else
            int8_first_pass_avx512<S, false>(y8, factors, shift, cols, signs, out);
    };
    with_stage_count(first, run);
    if (first < float_stages) fwht_passes<false>(xsimd::avx512bw{}, out, cols, N << first, 1.0f, signs);
}
SVQ_GCC_AVX512_WARNINGS_ON

}  // namespace svq::detail

#else
#define SVQ_KERNELS_AVX512BW 0
#endif
