// AVX-512 F kernels of the matrix decoder: the row streamer's line writer
// with streaming stores (kernels/dense.hpp, row_streamer), the counterpart of
// copy_lines_portable (kernels/portable.hpp). Compiles to nothing where the
// build does not enable AVX-512 F; SVQ_KERNELS_AVX512F says whether it did.
#pragma once

#include <cstddef>

#if defined(__AVX512F__)
#define SVQ_KERNELS_AVX512F 1

#include <immintrin.h>

namespace svq::detail {

// A line of 16 floats written with a streaming store (which does not read the
// destination line first) to a 64-byte aligned destination; fence() orders
// the streamed lines before other threads read them.
struct stream_lines_avx512 {
    static constexpr std::size_t dst_alignment = 64;  // bytes
    static void write(const float* src, float* dst) noexcept { _mm512_stream_ps(dst, _mm512_loadu_ps(src)); }
    static void fence() noexcept { _mm_sfence(); }
};

}  // namespace svq::detail

#else
#define SVQ_KERNELS_AVX512F 0
#endif
