// The kernels the matrix decoder (kernels/gemv.hpp) calls, chosen at compile
// time: the instruction-set-specific kernel where the build enables its
// instruction set and handles the shape (kernels/avx512/), else the portable
// one (kernels/portable.hpp), which defines the floats. Both give the same
// bits (tests/test_simd_kernels.cpp). docs/performance.md, "The dense path
// (speed configurations)", describes the steps.
#pragma once

#include <svq/kernels/avx512/avx512bw.hpp>
#include <svq/kernels/avx512/avx512f.hpp>
#include <svq/kernels/portable.hpp>

#include <cstddef>
#include <cstdint>

namespace svq::detail {

// Outputs of at least this many bytes (more than a core's L2 cache) are
// written with streaming stores, which do not read the destination lines first.
inline constexpr std::size_t stream_bytes = std::size_t{8} << 20;

// Copies a finished row to its place in a large output a 16-float line at a
// time through Lines (write(src, dst) a line, fence() after the last,
// dst_alignment: the destination alignment in bytes that write needs; the
// floats before the first aligned line and after the last whole line are
// plain stores), a piece at a time: the dense decoder streams one 64-byte
// line per node of the next row's walk (pvq_split_index::unrank_dense's
// tick), so the writes to memory overlap that work instead of stalling at the
// end of a row. finish() writes what is left; fence() before other threads
// read the output.
template <class Lines>
class basic_row_streamer {
public:
    void start(const float* src, float* dst, std::size_t n) noexcept {
        src_ = src;
        dst_ = dst;
        n_ = n;
        done_ = 0;
        if constexpr (Lines::dst_alignment > 1) {
            while (done_ < n_ && reinterpret_cast<std::uintptr_t>(dst_ + done_) % Lines::dst_alignment != 0) {
                dst_[done_] = src_[done_];
                ++done_;
            }
        }
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
            Lines::write(src, dst);
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
    static void fence() noexcept { Lines::fence(); }

private:
    const float* src_ = nullptr;
    float* dst_ = nullptr;
    std::size_t n_ = 0, done_ = 0;
};

// The decoder's streamer: streaming stores with AVX-512 F, plain copies elsewhere.
#if SVQ_KERNELS_AVX512F
using row_streamer = basic_row_streamer<stream_lines_avx512>;
#else
using row_streamer = basic_row_streamer<copy_lines_portable>;
#endif

// Dense path, no integer-stage rotation: out = float(y_i) * factor (the
// reference decoder's floats). y8: groups * n int8, out: groups * n floats,
// factors: groups floats of scratch. AVX-512 BW for n = 16 and 32.
inline void scale_dense_groups8(const std::int8_t* y8, const std::uint32_t* codes, const dense_units& units,
                                float scale, std::size_t groups, std::size_t n, float* factors, float* out) noexcept {
#if SVQ_KERNELS_AVX512BW
    const auto scale_groups = [&](std::size_t j, std::size_t count) {
        scale_dense8_avx512(y8, factors, j, count, n, out);
    };
    if (n == 16) return dense_factors_avx512<16>(y8, codes, groups, units, scale, factors, scale_groups);
    if (n == 32) return dense_factors_avx512<32>(y8, codes, groups, units, scale, factors, scale_groups);
#endif
    scale_dense_groups8_portable(y8, codes, units, scale, groups, n, factors, out);
}

// Dense path with the integer-stage rotation (detail::integer_stage_inverse,
// bit for bit): y8: cols int8 (the AVX-512 kernel overwrites it), factors:
// cols / n floats of scratch, y: cols ints of scratch (the portable body).
// AVX-512 BW for n = 16 and 32 and cols a multiple of 64.
inline void integer_stage_dense(std::int8_t* y8, const std::uint32_t* codes, const dense_units& units, float scale,
                                std::size_t n, std::size_t cols, const float* signs, float* factors, float* out,
                                int* y) noexcept {
#if SVQ_KERNELS_AVX512BW
    if (cols % 64 == 0) {
        if (n == 16) return integer_stage_dense_avx512<16>(y8, codes, units, scale, cols, signs, factors, out);
        if (n == 32) return integer_stage_dense_avx512<32>(y8, codes, units, scale, cols, signs, factors, out);
    }
#endif
    integer_stage_dense_portable(y8, codes, units, scale, n, cols, signs, factors, out, y);
}

}  // namespace svq::detail
