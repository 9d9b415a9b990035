// Fast decoding and fused matrix-vector products for a quantized_matrix.
//
//   svq::matrix_decoder dec(q);         // tables built once per (N, K), cached here
//   dec.dequantize(out);                // == q.dequantize(out), bit for bit
//   dec.gemv(x, y);                     // y = Wq x without materialising Wq
//   dec.gemv_batch(x, y, 16);           // Y = Wq X for 16 vectors, one decode per group
//
// Decoding a row: its fields come from the format's reader
// (row_format::read_fields, format/row_format.hpp), its points from the
// table-driven split-order unrank (for the speed configurations, whose index
// fits one word, the dense walk pvq_split_index::unrank_dense over the whole
// row, chosen by itself: docs/performance.md, "Speed configurations"), and the
// pulses are scaled by the format's factor s * level / ||y||
// (detail::group_factor_of: double factor, then float(y_i) * float(factor)),
// so dequantize matches quantized_matrix::dequantize bit for bit.
//
// gemv: the stored rows are w' = w R^T (rotate/hadamard_rotation.hpp), so
// w . x = w' . (R x): x is rotated forward once, and every row is a sum over
// groups of factor_j * <y_j, (R x)_j> with integer pulses y_j; nothing is
// inverse-rotated. Rows are independent; `threads` splits them (0: all cores).
#pragma once

#include <svq/core/bitstream.hpp>
#include <svq/core/parallel.hpp>
#include <svq/error.hpp>
#include <svq/format/split_index.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/pvq/pulses.hpp>
#include <svq/simd/compat.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace svq {

namespace detail {

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

// Float buffers on 64-byte boundaries: the row buffers and the GEMV's
// vectors are read a 64-byte vector at a time, and a load split across two
// cache lines costs twice (the heap's 16-byte alignment varies by run).
using aligned_floats = std::vector<float, xsimd::aligned_allocator<float, 64>>;

// Outputs of at least this many bytes (more than a core's L2 cache) are
// written with streaming stores, which do not read the destination lines first.
inline constexpr std::size_t stream_bytes = std::size_t{8} << 20;

// Copies a finished row to its place in a large output with streaming stores
// (AVX-512: 64-byte aligned lines, the edges by plain stores; elsewhere plain
// copies), a piece at a time: the dense decoder streams one 64-byte line per
// node of the next row's walk (pvq_split_index::unrank_dense's tick), so the
// writes to memory overlap that work instead of stalling at the end of a row.
// finish() writes what is left; fence() before other threads read the output.
class row_streamer {
public:
    void start(const float* src, float* dst, std::size_t n) noexcept {
        src_ = src;
        dst_ = dst;
        n_ = n;
        done_ = 0;
#if defined(__AVX512F__)
        while (done_ < n_ && reinterpret_cast<std::uintptr_t>(dst_ + done_) % 64 != 0) {
            dst_[done_] = src_[done_];
            ++done_;
        }
#endif
    }
    // The whole lines still to write, as a value that a loop keeps in
    // registers (a member reached through a pointer is reloaded after every
    // int8 store, which may alias it): each call writes one line, until none
    // is left. give_back() records what it wrote.
    struct lines {
        const float* src;
        float* dst;
        std::size_t left;
        void operator()() noexcept {
            if (left == 0) return;
#if defined(__AVX512F__)
            _mm512_stream_ps(dst, _mm512_loadu_ps(src));
#else
            std::copy(src, src + 16, dst);
#endif
            src += 16;
            dst += 16;
            --left;
        }
    };
    lines take() const noexcept { return {src_ + done_, dst_ + done_, (n_ - done_) / 16}; }
    void give_back(const lines& l) noexcept { done_ = static_cast<std::size_t>(l.src - src_); }
    void finish() noexcept {
        lines rest = take();
        while (rest.left != 0) rest();
        give_back(rest);
        for (; done_ < n_; ++done_) dst_[done_] = src_[done_];
    }
    static void fence() noexcept {
#if defined(__AVX512F__)
        _mm_sfence();
#endif
    }

private:
    const float* src_ = nullptr;
    float* dst_ = nullptr;
    std::size_t n_ = 0, done_ = 0;
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

#if defined(__AVX512F__) && defined(__AVX512BW__)
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
#endif

// Dense path, no integer-stage rotation: out = float(y_i) * factor (the
// reference decoder's floats). y8: groups * n int8, out: groups * n floats,
// factors: groups floats of scratch.
inline void scale_dense_groups8(const std::int8_t* y8, const std::uint32_t* codes, const dense_units& units,
                                float scale, std::size_t groups, std::size_t n, float* factors, float* out) noexcept {
#if defined(__AVX512F__) && defined(__AVX512BW__)
    const auto scale_groups = [&](std::size_t j, std::size_t count) {
        scale_dense8_avx512(y8, factors, j, count, n, out);
    };
    if (n == 16) return dense_factors_avx512<16>(y8, codes, groups, units, scale, factors, scale_groups);
    if (n == 32) return dense_factors_avx512<32>(y8, codes, groups, units, scale, factors, scale_groups);
#endif
    dense_factors_scalar(y8, codes, groups, n, units, scale, factors);
    for (std::size_t j = 0; j < groups; ++j, y8 += n, out += n) {
        for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(y8[i]) * factors[j];
    }
}

// Dense path with the integer-stage rotation (detail::integer_stage_inverse,
// bit for bit): y8 (cols int8, overwritten),
// factors: cols / n floats of scratch, y: cols ints of scratch (the portable body).
inline void integer_stage_dense(std::int8_t* y8, const std::uint32_t* codes, const dense_units& units, float scale,
                                std::size_t n, std::size_t cols, const float* signs, float* factors, float* out,
                                int* y) noexcept {
#if defined(__AVX512F__) && defined(__AVX512BW__)
    if (cols % 64 == 0) {
        if (n == 16) return integer_stage_dense_avx512<16>(y8, codes, units, scale, cols, signs, factors, out);
        if (n == 32) return integer_stage_dense_avx512<32>(y8, codes, units, scale, cols, signs, factors, out);
    }
#endif
    dense_factors_scalar(y8, codes, cols / n, n, units, scale, factors);
    for (std::size_t i = 0; i < cols; ++i) y[i] = y8[i];
    integer_stage_inverse(y, factors, n, cols, signs, out);
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

}  // namespace detail

class matrix_decoder {
public:
    // Uses q's row format (its index tables and gain levels) and builds the
    // dense path's tables. The decoder reads q's words: q must outlive it, and
    // a temporary matrix is refused at compile time.
    explicit matrix_decoder(const quantized_matrix& q)
        : q_(&q),
          f_(&q.format()),
          l_(q.layout()),
          gain_levels_(levels_of(0)) {
        if (l_.tail_dim != 0) tail_levels_ = levels_of(l_.full_groups);
        rotation_ = q.rotation();
        integer_ = detail::integer_stage_rotation(l_, rotation_);
        if (full_index().dense()) {
            units_1_ = detail::dense_units(gain_levels_, l_.pulses, 1.0);
            if (integer_) units_n_ = detail::dense_units(gain_levels_, l_.pulses, static_cast<double>(l_.cols));
        }
    }
    explicit matrix_decoder(const quantized_matrix&& q) = delete;

    std::size_t rows() const noexcept { return l_.rows; }
    std::size_t cols() const noexcept { return l_.cols; }
    const pvq_split_index& full_index() const noexcept { return f_->full_index(); }

    // Row r before the inverse rotation (cols floats). Throws svq::corrupt_data
    // for an index >= V(N, K) or a bad row scale code.
    void decode_row_rotated(std::size_t r, float* out) const {
        row_scratch sc = make_scratch();
        if (full_index().dense())
            decode_row_dense(r, out, sc);
        else
            decode_row_impl(r, out, sc, [](std::size_t, const int*, std::size_t, float) {});
    }

    // All rows, row-major (rows * cols floats), bit-identical to quantized_matrix::dequantize.
    void dequantize(std::span<float> out, unsigned threads = 1) const {
        if (out.size() != rows() * cols())
            throw invalid_argument(fmt::format("matrix_decoder::dequantize: output has {} entries, the matrix {} x {}",
                                               out.size(), rows(), cols()));
        // Large outputs: each row is decoded (and inverse-rotated) in one of
        // two row buffers that stay in the L1 cache, then written to memory
        // with streaming stores (which read nothing back) while the next row
        // is decoded (detail::row_streamer).
        const bool stream = rows() * cols() * sizeof(float) >= detail::stream_bytes;
        detail::parallel_slices(rows(), threads, [&](std::size_t first, std::size_t end) {
            row_scratch sc = make_scratch();
            std::vector<float> scratch(rotation_ ? rotation_->scratch_size() : 0);
            detail::aligned_floats buffers(stream ? 2 * cols() : 0);
            detail::row_streamer streamer;
            for (std::size_t r = first; r < end; ++r) {
                float* dst = out.data() + r * cols();
                float* row = stream ? buffers.data() + (r % 2) * cols() : dst;
                if (full_index().dense()) {
                    decode_row_dense(r, row, sc, stream ? &streamer : nullptr, integer_);
                } else if (integer_) {  // the factors with norm cols, then the row's points in place
                    decode_row_impl(
                        r, nullptr, sc,
                        [&](std::size_t first_col, const int*, std::size_t dim, float factor) {
                            sc.factors[first_col / dim] = factor;
                        },
                        static_cast<double>(cols()));
                    detail::integer_stage_inverse(sc.y.data(), sc.factors.data(), l_.group_dim, cols(),
                                                  rotation_->signs().data(), row);
                } else {
                    decode_row_impl(r, row, sc, [](std::size_t, const int*, std::size_t, float) {});
                }
                if (rotation_ && !integer_) rotation_->inverse(std::span<float>(row, cols()), scratch);
                if (stream) {
                    streamer.finish();  // the previous row (usually written already)
                    streamer.start(row, dst, cols());
                }
            }
            if (stream) {
                streamer.finish();
                detail::row_streamer::fence();
            }
        });
    }

    // y = Wq x. x: cols floats, y: rows floats.
    void gemv(std::span<const float> x, std::span<float> y, unsigned threads = 1) const {
        gemv_batch(x, y, 1, threads);
    }

    // Y = Wq X for `batch` vectors: x: batch * cols floats (vector c at c * cols),
    // y: batch * rows floats (vector c at c * rows). Each group is decoded once.
    void gemv_batch(std::span<const float> x, std::span<float> y, std::size_t batch, unsigned threads = 1) const {
        detail::check_gemv_shapes(x.size(), y.size(), batch, rows(), cols(), "matrix_decoder::gemv");
        detail::aligned_floats xr(x.begin(), x.end());
        if (rotation_) {
            std::vector<float> scratch(rotation_->scratch_size());
            for (std::size_t c = 0; c < batch; ++c)
                rotation_->forward(std::span<float>(xr.data() + c * cols(), cols()), scratch);
        }
        detail::parallel_slices(rows(), threads, [&](std::size_t first, std::size_t end) {
            row_scratch sc = make_scratch();
            std::vector<float> acc(batch);
            for (std::size_t r = first; r < end; ++r) {
                if (full_index().dense()) {  // decode the row once, then one float dot per vector
                    decode_row_dense(r, sc.row.data(), sc);
                    for (std::size_t c = 0; c < batch; ++c)
                        y[c * rows() + r] = detail::float_dot(sc.row.data(), xr.data() + c * cols(), cols());
                    continue;
                }
                std::fill(acc.begin(), acc.end(), 0.0f);
                decode_row_impl(
                    r, nullptr, sc, [&](std::size_t first_col, const int* p, std::size_t dim, float factor) {
                        for (std::size_t c = 0; c < batch; ++c)
                            acc[c] += factor * detail::pulse_dot(p, xr.data() + c * cols() + first_col, dim);
                    });
                for (std::size_t c = 0; c < batch; ++c) y[c * rows() + r] = acc[c];
            }
        });
    }

private:
    std::vector<double> levels_of(std::size_t group) const {
        const std::span<const double> levels = f_->gain_levels(group);
        return {levels.begin(), levels.end()};
    }

    // Per-thread buffers of decode_row_impl.
    struct row_scratch {
        std::vector<std::uint64_t> index;  // the row's full-group indices, limbs() words each
        std::array<std::uint64_t, detail::max_split_limbs> tail_index{};
        std::vector<int> y;                // the row's pulses, group_dim ints per group
        std::vector<std::uint32_t> codes;  // the row's gain codes
        pvq_split_index::unrank_workspace ws;
        pvq_split_index::dense_workspace dense;
        std::vector<std::int8_t> y8;  // dense path: the row's full-group pulses
        detail::aligned_floats row;   // dense gemv: the decoded row (rotated domain)
        std::vector<float> factors;   // the row's group factors
    };
    row_scratch make_scratch() const {
        row_scratch s;
        s.index.resize(l_.full_groups * full_index().limbs());
        s.y.resize(l_.groups_per_row() * l_.group_dim);
        s.codes.resize(l_.groups_per_row());
        s.factors.resize(l_.groups_per_row());
        if (full_index().dense()) {
            s.y8.resize(l_.full_groups * l_.group_dim);
            s.row.resize(l_.cols);
        }
        return s;
    }

    // Dense path (full_index().dense(): the speed configurations, index in one word):
    // reads each full group's index and gain code with one bit-field read,
    // unranks the row's full groups together (pvq_split_index::unrank_dense,
    // int8 pulses), then scales each group by detail::group_factor's formula
    // (the energy summed from the int8 pulses: the same integer), so the
    // floats equal the reference decoder's. The tail group takes the general path.
    // stream: null, or a finished row to write to memory meanwhile (dequantize).
    // integer: the row in the original basis by the integer-stage rotation
    // (detail::integer_stage_inverse; the matrix has no tail group then).
    void decode_row_dense(std::size_t r, float* out, row_scratch& sc, detail::row_streamer* stream = nullptr,
                          bool integer = false) const {
        const std::size_t n = l_.group_dim, full = l_.full_groups;
        const std::span<const std::uint64_t> words = q_->words();
        if (r + 1 < l_.rows) {
            // The next row's words (rows are read in order): one row of lead time,
            // where the hardware prefetcher fell behind with the output streamed
            // out at the same time (the first load of a field was a fifth of the row).
            const std::size_t from = l_.row_bit_offset(r + 1) / 64;
            const std::size_t to = std::min(words.size(), (l_.row_bit_offset(r + 1) + l_.bits_per_row()) / 64 + 1);
            for (std::size_t w = from; w < to; w += 8) __builtin_prefetch(words.data() + w);
        }
        const double s = f_->read_fields(words, r, sc.index.data(), sc.tail_index.data(), sc.codes.data());
        const std::uint32_t* codes = sc.codes.data();
        const std::uint64_t* index = sc.index.data();
        // The previous row (dequantize) streams out during the walk: one
        // 16-float line per node of the walk's last level, as many as the row has.
        if (stream != nullptr) {
            detail::row_streamer::lines lines = stream->take();
            full_index().unrank_dense(index, full, sc.y8.data(), sc.dense, lines);
            stream->give_back(lines);
        } else
            full_index().unrank_dense(index, full, sc.y8.data(), sc.dense);
        const auto scale = static_cast<float>(s);
        if (integer) {
            detail::integer_stage_dense(sc.y8.data(), codes, units_n_, scale, n, l_.cols, rotation_->signs().data(),
                                        sc.factors.data(), out, sc.y.data());
            return;
        }
        detail::scale_dense_groups8(sc.y8.data(), codes, units_1_, scale, full, n, sc.factors.data(), out);
        int* y = sc.y.data();
        if (l_.tail_dim != 0) {
            int* yt = y + full * n;
            f_->unrank_tail(sc.tail_index.data(), yt);
            const float factor = detail::group_factor(s, tail_levels_[codes[full]], yt, l_.tail_dim);
            detail::scale_pulses(yt, factor, out + full * n, l_.tail_dim);
        }
    }

    // Decodes row r: reads every group's index and gain code, unranks the full
    // groups together (pvq_split_index::unrank_batch), then per group writes
    // the scaled floats to out (when not null) and calls
    // on_group(first column, pulses, dim, factor). norm: group_factor_of's (1,
    // or cols for the integer-stage rotation). The pulses stay in sc.y.
    template <class OnGroup>
    void decode_row_impl(std::size_t r, float* out, row_scratch& sc, OnGroup&& on_group, double norm = 1.0) const {
        const double s = f_->read_fields(q_->words(), r, sc.index.data(), sc.tail_index.data(), sc.codes.data());
        const std::size_t groups = l_.groups_per_row();
        const std::uint32_t* codes = sc.codes.data();
        f_->unrank_points(sc.index.data(), sc.tail_index.data(), sc.y.data(), sc.ws);
        for (std::size_t j = 0; j < groups; ++j) {
            const bool full = j < l_.full_groups;
            const std::size_t dim = full ? l_.group_dim : l_.tail_dim;
            const int* y = sc.y.data() + j * l_.group_dim;
            const double level = (full ? gain_levels_ : tail_levels_)[codes[j]];
            const float factor = detail::group_factor_of(s, level, detail::pulse_energy(y, dim), norm);
            if (out != nullptr) detail::scale_pulses(y, factor, out + j * l_.group_dim, dim);
            on_group(j * l_.group_dim, y, dim, factor);
        }
    }

    const quantized_matrix* q_;
    const row_format* f_;  // q's
    matrix_layout l_;
    std::vector<double> gain_levels_, tail_levels_;
    const hadamard_rotation* rotation_ = nullptr;  // q's
    bool integer_ = false;  // detail::integer_stage_rotation
    detail::dense_units units_1_, units_n_;  // dense path: norm 1 and cols
};

}  // namespace svq
