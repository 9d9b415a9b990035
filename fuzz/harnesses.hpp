// The fuzz harnesses of svq's readers: one function per entry point, called
// by the libFuzzer executables (fuzz/fuzz_<harness>.cpp, clang) and by the
// corpus replay driver (fuzz/replay_main.cpp, any compiler, run by ctest).
//
// Each function takes arbitrary bytes and hands them to svq. A typed error
// (svq::error and its subclasses) is the expected answer to bad input and is
// caught by the caller (run_harness); any other exception, a crash, a
// sanitizer report or a broken invariant is a finding. The invariants below
// are what must hold when svq returns without an error; a violation calls
// fail(), which prints what broke and aborts (a crash libFuzzer records).
// docs/fuzzing.md describes each harness.
#pragma once

#include <svq/error.hpp>
#include <svq/io/mapped_file.hpp>
#include <svq/io/npy.hpp>
#ifndef SVQ_FUZZ_NO_SVQ_FILE  // harnesses that do not read svq files skip it (and CRVQ): shorter builds
#include <svq/io/quantized_file.hpp>
#endif
#include <svq/io/safetensors.hpp>
#include <svq/kernels/gemv.hpp>
#include <svq/matrix/quantized_matrix.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace svq::fuzz {

// The input being run, when the caller names it (the replay driver), for fail().
inline std::string current_input;

// A broken invariant: says which and aborts (libFuzzer and the replay driver
// report the input).
[[noreturn]] inline void fail(const char* harness, const std::string& what) {
    std::fprintf(stderr, "svq fuzz invariant violated (%s)%s%s: %s\n", harness, current_input.empty() ? "" : " on ",
                 current_input.c_str(), what.c_str());
    std::fflush(stderr);
    std::abort();
}

namespace detail {

inline bool same_bits(std::span<const float> a, std::span<const float> b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size_bytes()) == 0);
}

inline std::size_t first_non_finite(std::span<const float> v) {
    for (std::size_t i = 0; i < v.size(); ++i)
        if (!std::isfinite(v[i])) return i;
    return v.size();
}

}  // namespace detail

// ---- safetensors header ------------------------------------------------
// parse_safetensors_header on the bytes as a whole file; when it accepts:
// the data starts inside the file, every tensor's [begin, end) lies inside
// the data, its size is elements * dtype size, tensors are sorted and do
// not overlap and cover the data exactly. Then safetensors_file reads every
// float tensor (to_float gives elements() values).
inline void safetensors_header(std::span<const std::byte> bytes) {
    constexpr const char* H = "safetensors";
    const svq::safetensors_header h = svq::parse_safetensors_header(bytes, "fuzz.safetensors");
    if (h.data_start < 8 || h.data_start > bytes.size())
        fail(H, fmt::format("data_start {} outside a file of {} bytes", h.data_start, bytes.size()));
    const std::size_t data_size = bytes.size() - h.data_start;
    std::size_t at = 0;
    for (const svq::tensor_info& t : h.tensors) {
        if (t.begin > t.end || t.end > data_size)
            fail(H, fmt::format("tensor '{}' [{}, {}) outside the data ({} bytes)", t.name, t.begin, t.end, data_size));
        if (t.begin < at) fail(H, fmt::format("tensor '{}' [{}, {}) overlaps the one before (ends at {})", t.name, t.begin, t.end, at));
        const std::size_t item = svq::dtype_size(t.type);
        std::size_t elements = 1;
        for (const std::size_t d : t.shape) {
            if (d != 0 && elements > std::numeric_limits<std::size_t>::max() / d)
                fail(H, fmt::format("tensor '{}': shape overflows a size_t", t.name));
            elements *= d;
        }
        if (item == 0 || elements > std::numeric_limits<std::size_t>::max() / item || t.bytes() != elements * item)
            fail(H, fmt::format("tensor '{}': {} bytes for {} elements of {} bytes", t.name, t.bytes(), elements, item));
        at = t.end;
    }
    if (at != data_size) fail(H, fmt::format("tensors cover {} of {} data bytes", at, data_size));

    const svq::safetensors_file f(svq::mapped_file::from_bytes(bytes, "fuzz.safetensors"));
    if (f.tensors().size() != h.tensors.size()) fail(H, "safetensors_file disagrees with parse_safetensors_header");
    for (const svq::tensor_info& t : f.tensors()) {
        if (f.find(t.name) == nullptr) fail(H, fmt::format("tensor '{}' not found by name", t.name));
        const std::span<const std::byte> d = f.data(t);
        if (d.data() < f.storage()->bytes().data() ||
            d.data() + d.size() > f.storage()->bytes().data() + f.storage()->bytes().size())
            fail(H, fmt::format("tensor '{}': data() outside the file", t.name));
        if (t.type == svq::dtype::f32 || t.type == svq::dtype::f16 || t.type == svq::dtype::bf16 || t.type == svq::dtype::f64) {
            const std::vector<float> v = f.to_float(t.name);
            if (v.size() != t.elements()) fail(H, fmt::format("tensor '{}': to_float gave {} of {} values", t.name, v.size(), t.elements()));
        }
    }
}

// ---- .npy ---------------------------------------------------------------
// parse_npy on the bytes; when it accepts: values.size() is the product of
// the shape.
inline void npy(std::span<const std::byte> bytes) {
    const svq::npy_array a = svq::parse_npy(bytes, "fuzz.npy");
    std::size_t elements = 1;
    for (const std::size_t d : a.shape) {
        if (d != 0 && elements > std::numeric_limits<std::size_t>::max() / d) fail("npy", "shape overflows a size_t");
        elements *= d;
    }
    if (a.values.size() != elements)
        fail("npy", fmt::format("{} values for shape ({}) = {} elements", a.values.size(), fmt::join(a.shape, ", "), elements));
    if (elements * 2 > bytes.size()) fail("npy", fmt::format("{} elements from a file of {} bytes", elements, bytes.size()));
}

// ---- row decoder --------------------------------------------------------
// A small PVQ matrix from the bytes:
//   byte 0: bits 0-1 group_dim in {4, 8, 16, 32}, bit 2 rotate, bit 3
//           row_scale_bits (0: 16, 1: 8), bits 4-6 rows - 1 (1..8)
//   byte 1: pulses - 1 (mod 64: 1..64)
//   byte 2: gain_bits - 1 (mod 8: 1..8)
//   byte 3: cols = group_dim + 1 + byte % (3 group_dim)  (group_dim + 1 .. 4 group_dim)
//   byte 4: the rotation seed
//   bytes 5-8: the reference scale (float, little-endian)
//   the rest: the payload words (little-endian, zero-padded or truncated to
//             layout.payload_words())
// Missing header bytes read as zero. A reference scale that is negative or
// not finite must be refused with svq::corrupt_data (checked here, then the
// harness returns). Otherwise the matrix is decoded by quantized_matrix
// (dequantize, decode_row) and matrix_decoder (dequantize, gemv); when no
// error is thrown every decoded value is finite, the two decoders agree bit
// for bit, decode_row(r) is row r of dequantize, and the GEMV of a bounded x
// is finite. When one decoder throws svq::error the other must too.
inline constexpr std::size_t row_decoder_header = 9;

inline matrix_config row_decoder_config(std::span<const std::byte> bytes, std::size_t& rows, std::size_t& cols, float& ref) {
    std::byte h[row_decoder_header] = {};
    if (!bytes.empty()) std::memcpy(h, bytes.data(), std::min(bytes.size(), row_decoder_header));
    const auto b = [&](std::size_t i) { return static_cast<unsigned>(h[i]); };
    static constexpr std::size_t dims[] = {4, 8, 16, 32};
    matrix_config c;
    c.group_dim = dims[b(0) & 3u];
    c.rotate = (b(0) & 4u) != 0;
    c.row_scale_bits = (b(0) & 8u) != 0 ? 8 : 16;
    rows = 1 + ((b(0) >> 4) & 7u);
    c.pulses = 1 + b(1) % 64;
    c.gain_bits = 1 + b(2) % 8;
    cols = c.group_dim + 1 + b(3) % (3 * c.group_dim);
    c.seed = 0x5356512d524f54ull ^ b(4);
    std::memcpy(&ref, h + 5, 4);
    return c;
}

inline void row_decoder(std::span<const std::byte> bytes) {
    constexpr const char* H = "row_decoder";
    std::size_t rows = 0, cols = 0;
    float ref = 0.0f;
    const matrix_config c = row_decoder_config(bytes, rows, cols, ref);
    const matrix_layout layout = make_layout(rows, cols, c);
    std::vector<std::uint64_t> words(layout.payload_words(), 0);
    const std::span<const std::byte> payload = bytes.size() > row_decoder_header ? bytes.subspan(row_decoder_header)
                                                                                 : std::span<const std::byte>{};
    if (!payload.empty()) std::memcpy(words.data(), payload.data(), std::min(payload.size(), words.size() * 8));

    if (!std::isfinite(ref) || ref < 0.0f) {  // the typed error, nothing else
        try {
            const quantized_matrix q(rows, cols, c, ref, std::move(words));
        } catch (const svq::corrupt_data&) {
            return;
        }
        fail(H, fmt::format("reference scale {} accepted", ref));
    }
    const quantized_matrix q(rows, cols, c, ref, std::move(words));
    const std::string what = fmt::format("{} x {} {} ref {}", rows, cols, to_string(c), ref);

    std::vector<float> w;
    bool threw = false;
    try {
        w = q.dequantize();
    } catch (const svq::error&) {
        threw = true;
    }
    const matrix_decoder dec(q);
    std::vector<float> w2(rows * cols);
    bool threw2 = false;
    try {
        dec.dequantize(w2);
    } catch (const svq::error&) {
        threw2 = true;
    }
    if (threw != threw2)
        fail(H, fmt::format("{}: quantized_matrix::dequantize {}, matrix_decoder::dequantize {}", what,
                            threw ? "threw" : "did not throw", threw2 ? "threw" : "did not throw"));
    if (threw) {
        // Rows that decode on their own still decode; the bad one throws again.
        std::vector<float> row(cols);
        for (std::size_t r = 0; r < rows; ++r) {
            try {
                q.decode_row(r, row);
            } catch (const svq::error&) {
            }
        }
        return;
    }
    if (w.size() != rows * cols) fail(H, fmt::format("{}: dequantize gave {} values", what, w.size()));
    if (const std::size_t i = detail::first_non_finite(w); i < w.size())
        fail(H, fmt::format("{}: decoded weight ({}, {}) = {} is not finite", what, i / cols, i % cols, w[i]));
    if (!detail::same_bits(w, w2)) fail(H, fmt::format("{}: matrix_decoder::dequantize differs from quantized_matrix's", what));
    std::vector<float> row(cols);
    for (std::size_t r = 0; r < rows; ++r) {
        q.decode_row(r, row);
        if (!detail::same_bits(row, std::span<const float>(w).subspan(r * cols, cols)))
            fail(H, fmt::format("{}: decode_row({}) differs from row {} of dequantize", what, r, r));
    }

    std::vector<float> x(cols), y(rows);
    for (std::size_t i = 0; i < cols; ++i) x[i] = static_cast<float>(static_cast<int>((i * 7) % 11) - 5) / 5.0f;
    dec.gemv(x, y);
    float largest = 0.0f;
    for (const float v : w) largest = std::max(largest, std::fabs(v));
    // y is finite unless the sums themselves can overflow.
    if (static_cast<double>(largest) * static_cast<double>(cols) * 4.0 < static_cast<double>(std::numeric_limits<float>::max()))
        if (const std::size_t i = detail::first_non_finite(y); i < y.size())
            fail(H, fmt::format("{}: gemv y[{}] = {} is not finite (largest |w| {})", what, i, y[i], largest));
}

#ifndef SVQ_FUZZ_NO_SVQ_FILE
// ---- svq metadata -------------------------------------------------------
// The bytes as a whole svq file: model_file (with and without checksum
// verification) lists matrices() and tensors(); every matrix of at most
// 2^16 entries is dequantized (rows * cols values: a PVQ matrix also by
// matrix_decoder, bit for bit the same) and every tensor read (elements()
// values). Each matrix and tensor is tried on its own: one's error does not
// hide the next.
inline constexpr std::size_t max_fuzz_matrix_entries = std::size_t{1} << 16;

inline void svq_file(std::span<const std::byte> bytes, bool verify_checksums) {
    constexpr const char* H = "svq_metadata";
    const svq::model_file f(svq::mapped_file::from_bytes(bytes, "fuzz.svq.safetensors"),
                            svq::load_options{.verify_checksums = verify_checksums, .mmap = false});
    for (const std::string& name : f.matrices()) {
        try {
            const auto [rows, cols] = f.shape(name);
            if (rows > max_fuzz_matrix_entries / cols) continue;
            const std::vector<float> w = f.dequantize(name);
            if (w.size() != rows * cols)
                fail(H, fmt::format("matrix '{}' {} x {}: dequantize gave {} values", name, rows, cols, w.size()));
            if (f.method(name) == "pvq") {
                const quantized_matrix q = f.pvq(name);
                std::vector<float> w2(rows * cols);
                matrix_decoder(q).dequantize(w2);
                if (!detail::same_bits(w, w2)) fail(H, fmt::format("matrix '{}': matrix_decoder differs from dequantize", name));
            }
        } catch (const svq::error&) {
        }
    }
    for (const std::string& name : f.tensors()) {
        try {
            const std::vector<float> v = f.tensor(name);
            if (v.size() != f.file().at(name).elements())
                fail(H, fmt::format("tensor '{}': {} values of {}", name, v.size(), f.file().at(name).elements()));
        } catch (const svq::error&) {
        }
    }
}

inline void svq_metadata(std::span<const std::byte> bytes) {
    try {
        svq_file(bytes, false);  // past the checksums: the parser and the decoders on any field
    } catch (const svq::error&) {
    }
    svq_file(bytes, true);  // as svq::load reads: a checksum failure is a typed error too
}
#endif

// ---- dispatch -----------------------------------------------------------
using harness_fn = void (*)(std::span<const std::byte>);
struct harness {
    std::string_view name;
    harness_fn run;
};
inline constexpr harness harnesses[] = {
    {"safetensors", safetensors_header},
#ifndef SVQ_FUZZ_NO_SVQ_FILE
    {"svq_metadata", svq_metadata},
#endif
    {"row_decoder", row_decoder},
    {"npy", npy},
};

inline harness_fn find_harness(std::string_view name) {
    for (const harness& h : harnesses)
        if (h.name == name) return h.run;
    return nullptr;
}

// One input through a harness: svq::error is the expected answer to bad
// input; anything else escapes (libFuzzer reports an uncaught exception as a
// crash, the replay driver fails).
inline int run_harness(harness_fn h, const std::uint8_t* data, std::size_t size) {
    try {
        h(std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size));
    } catch (const svq::error&) {
    }
    return 0;
}

}  // namespace svq::fuzz
