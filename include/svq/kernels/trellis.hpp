// Kernels of the trellis codec (trellis/trellis.hpp, docs/trellis.md): the
// code of a state, reading the states of 16 weights from the bitstream, the
// two passes of one Viterbi step, and their AVX-512 BW forms
// (kernels/avx512/trellis_avx512bw.hpp), chosen at compile time. The portable
// functions here define the results; the AVX-512 ones give the same bits
// (tests/test_trellis.cpp), except the dot product, whose sum runs in another
// order.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace svq::detail {

// The code of a trellis state s (an L-bit window of the stream): the sum of
// the four bytes of the 32-bit word a s + b, minus their mean, 510. An integer
// in [-510, 510], approximately Gaussian over the states, standard deviation
// sqrt(4 (256^2 - 1) / 12) = 147.80 (the "1MAD" code of Tseng et al., QTIP,
// 2024).
inline constexpr std::uint32_t trellis_code_mul = 34038481u;
inline constexpr std::uint32_t trellis_code_add = 76625530u;
inline constexpr double trellis_code_rms = 147.80054127;  // sqrt(21845)

constexpr int trellis_code(std::uint32_t s) noexcept {
    const std::uint32_t x = trellis_code_mul * s + trellis_code_add;
    return static_cast<int>((x & 255u) + ((x >> 8) & 255u) + ((x >> 16) & 255u) + (x >> 24)) - 510;
}

// Bit position of weight t of a segment, with `bits64` stored bits per 64
// weights: floor(t bits64 / 64). Weight t's state is bits [pos(t), pos(t) + L)
// of the segment, first bit most significant.
constexpr std::size_t trellis_bit(std::size_t t, unsigned bits64) noexcept { return t * bits64 / 64; }

// The new bits of weight t >= 1: its window is the previous one shifted left by them.
constexpr unsigned trellis_shift(std::size_t t, unsigned bits64) noexcept {
    return static_cast<unsigned>(trellis_bit(t, bits64) - trellis_bit(t - 1, bits64));
}

// The L-bit window at bit `bit` of `p` (bit 0 is the most significant bit of
// p[0]). Reads the four bytes from bit / 8 on (L <= 25).
inline std::uint32_t trellis_window(const std::uint8_t* p, std::size_t bit, unsigned L) noexcept {
    const std::uint8_t* b = p + (bit >> 3);
    const std::uint32_t word = (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) |
                               (std::uint32_t{b[2]} << 8) | std::uint32_t{b[3]};
    return (word >> (32u - L - static_cast<unsigned>(bit & 7))) & ((std::uint32_t{1} << L) - 1u);
}

// Codes of the n weights first, first + 1, ... of the segment p:
// z[i] = trellis_code(window at trellis_bit(first + i)).
inline void trellis_codes_portable(const std::uint8_t* p, std::size_t first, std::size_t n, unsigned bits64,
                                   unsigned L, int* z) noexcept {
    for (std::size_t i = 0; i < n; ++i) z[i] = trellis_code(trellis_window(p, trellis_bit(first + i, bits64), L));
}

// out[i] = float(z_i) * factor over `blocks` blocks of 16 weights from
// `first`. With H16, the first four stages of the Walsh-Hadamard transform
// run exactly on each block's integer codes first, z' = H_16 z (butterflies
// of half 1, 2, 4, 8: (a, b) -> (a + b, a - b)), and out = float(z') *
// factor: the decoder of a rotated power-of-two row runs the remaining
// stages after it.
template <bool H16 = false>
inline void trellis_decode_portable(const std::uint8_t* p, std::size_t first, std::size_t blocks, unsigned bits64,
                                    unsigned L, float factor, float* out) noexcept {
    for (std::size_t j = 0; j < blocks; ++j) {
        std::array<int, 16> z{};
        trellis_codes_portable(p, first + 16 * j, 16, bits64, L, z.data());
        if constexpr (H16)
            for (unsigned half = 1; half < 16; half *= 2)
                for (unsigned i = 0; i < 16; ++i)
                    if ((i & half) == 0) {
                        const int a = z[i], b = z[i + half];
                        z[i] = a + b;
                        z[i + half] = a - b;
                    }
        for (unsigned i = 0; i < 16; ++i) out[16 * j + i] = static_cast<float>(z[i]) * factor;
    }
}

// sum_i z_i x_i over the same weights (16 partial sums, one per position in a
// block, then added in order).
inline float trellis_dot_portable(const std::uint8_t* p, std::size_t first, std::size_t blocks, unsigned bits64,
                                  unsigned L, const float* x) noexcept {
    std::array<float, 16> acc{};
    for (std::size_t j = 0; j < blocks; ++j) {
        std::array<int, 16> z{};
        trellis_codes_portable(p, first + 16 * j, 16, bits64, L, z.data());
        for (unsigned i = 0; i < 16; ++i) acc[i] = std::fma(static_cast<float>(z[i]), x[16 * j + i], acc[i]);
    }
    float s = 0.0f;
    for (const float a : acc) s += a;
    return s;
}

// The first pass of a Viterbi step that shifts k bits into an L-bit state:
// the predecessors of the states whose top L - k bits are x are the states
// (u << (L - k)) | x, u < 2^k. minprev[x] = the least cost among them,
// back[x] = its u (the smallest u among equal costs). Returns the least of
// all minprev.
inline float trellis_min_portable(const float* cost, unsigned L, unsigned k, float* minprev,
                                  std::uint8_t* back) noexcept {
    const std::size_t P = std::size_t{1} << (L - k), U = std::size_t{1} << k;
    float least = std::numeric_limits<float>::infinity();
    for (std::size_t x = 0; x < P; ++x) {
        float m = cost[x];
        std::uint8_t a = 0;
        for (std::size_t u = 1; u < U; ++u) {
            const float c = cost[u * P + x];
            if (c < m) {
                m = c;
                a = static_cast<std::uint8_t>(u);
            }
        }
        minprev[x] = m;
        back[x] = a;
        least = std::min(least, m);
    }
    return least;
}

// The second pass: the cost of reaching each of the 2^L states s at weight w,
// out[s] = d^2 + (minprev[s >> k] - least) with d = w - c z[s] (both as
// fused multiply-adds). k = 0 with minprev all zeros gives the first weight's
// costs.
inline void trellis_add_portable(const float* minprev, float least, const float* z, float w, float c, unsigned L,
                                 unsigned k, float* out) noexcept {
    const std::size_t S = std::size_t{1} << L;
    for (std::size_t s = 0; s < S; ++s) {
        const float d = std::fma(-c, z[s], w);
        out[s] = std::fma(d, d, minprev[s >> k] - least);
    }
}

// The byte shuffles and shifts that read the 16 states of a block at once
// (what the AVX-512 BW kernels load: lane i gets the big-endian 32-bit word
// at its state's first byte, then a right shift leaves the state in its low
// L bits). Block m (weights 16 m .. 16 m + 15) starts at bit
// floor(m b / 4), b = bits64; its lanes' offsets from there depend on
// phase = m b mod 4, and their bytes on sub = that bit mod 8: one pattern
// for each (phase, sub).
struct trellis_lanes {
    alignas(64) std::uint8_t shuffle[32][64]{};
    alignas(64) std::uint32_t shift[32][16]{};
    trellis_lanes() = default;
    trellis_lanes(unsigned bits64, unsigned L) noexcept {
        for (unsigned phase = 0; phase < 4; ++phase)
            for (unsigned sub = 0; sub < 8; ++sub)
                for (unsigned i = 0; i < 16; ++i) {
                    const std::size_t q = sub + (16 * phase + std::size_t{i} * bits64) / 64;
                    for (unsigned j = 0; j < 4; ++j)
                        shuffle[8 * phase + sub][4 * i + j] = static_cast<std::uint8_t>((q >> 3) + 3 - j);  // big-endian
                    shift[8 * phase + sub][i] = 32u - L - static_cast<std::uint32_t>(q & 7);
                }
    }
};

}  // namespace svq::detail

#include <svq/kernels/avx512/trellis_avx512bw.hpp>

namespace svq::detail {

// The dispatchers: the AVX-512 BW kernel where the build has it, else the
// portable one. `first` is a multiple of 16; reads up to 16 bytes from the
// last block's first byte.
template <bool H16 = false>
inline void trellis_decode(const trellis_lanes& lanes, const std::uint8_t* p, std::size_t first, std::size_t blocks,
                           unsigned bits64, unsigned L, float factor, float* out) noexcept {
#if SVQ_KERNELS_AVX512BW
    trellis_decode_avx512<H16>(lanes, p, first, blocks, bits64, L, factor, out);
#else
    (void)lanes;
    trellis_decode_portable<H16>(p, first, blocks, bits64, L, factor, out);
#endif
}

inline float trellis_dot(const trellis_lanes& lanes, const std::uint8_t* p, std::size_t first, std::size_t blocks,
                         unsigned bits64, unsigned L, const float* x) noexcept {
#if SVQ_KERNELS_AVX512BW
    return trellis_dot_avx512(lanes, p, first, blocks, bits64, L, x);
#else
    (void)lanes;
    return trellis_dot_portable(p, first, blocks, bits64, L, x);
#endif
}

inline float trellis_min(const float* cost, unsigned L, unsigned k, float* minprev, std::uint8_t* back) noexcept {
#if SVQ_KERNELS_AVX512BW
    if ((L - k) >= 4) return trellis_min_avx512(cost, L, k, minprev, back);
#endif
    return trellis_min_portable(cost, L, k, minprev, back);
}

inline void trellis_add(const float* minprev, float least, const float* z, float w, float c, unsigned L, unsigned k,
                        float* out) noexcept {
#if SVQ_KERNELS_AVX512BW
    if (L >= 4) return trellis_add_avx512(minprev, least, z, w, c, L, k, out);
#endif
    trellis_add_portable(minprev, least, z, w, c, L, k, out);
}

}  // namespace svq::detail
