// The instruction-set-specific kernels of the matrix decoder
// (kernels/avx512/) against their portable counterparts (kernels/portable.hpp)
// on the same random inputs, bit for bit, and the portable kernels against
// plain scalar definitions written here. Kernels that this build did not
// compile (another CPU, another -march) are named in a warning; the portable
// checks run everywhere. docs/performance.md, "The dense path (speed
// configurations)", describes the kernels.
#include "catch.hpp"

#include <svq/kernels/dense.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

// Group counts of the dense path's edges: none, fewer than one block of 8,
// exact blocks, a block and a rest, many.
constexpr std::size_t edge_groups[] = {0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 64, 129, 256};
// Pulse counts: the smallest, the speed configurations' (2, 3 and 4 bpw), the int8 limit.
constexpr std::size_t pulse_counts[] = {1, 21, 22, 46, 127};

// Index of the first float whose bits differ, n when all agree.
std::size_t first_difference(const float* a, const float* b, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
        if (std::bit_cast<std::uint32_t>(a[i]) != std::bit_cast<std::uint32_t>(b[i])) return i;
    return n;
}

// Where a and b first differ, for the failure message.
std::string difference(const float* a, const float* b, std::size_t n) {
    const std::size_t i = first_difference(a, b, n);
    if (i == n) return "same bits";
    return fmt::format("first difference at {}: {} ({:#010x}) vs {} ({:#010x})", i, a[i],
                       std::bit_cast<std::uint32_t>(a[i]), b[i], std::bit_cast<std::uint32_t>(b[i]));
}

#define REQUIRE_SAME_BITS(a, b, n)                                              \
    do {                                                                        \
        INFO(difference((a), (b), (n)));                                        \
        REQUIRE(first_difference((a), (b), (n)) == (n));                        \
        REQUIRE(((n) == 0 || std::memcmp((a), (b), (n) * sizeof(float)) == 0)); \
    } while (false)

// groups points of P(n, k) as int8: k unit pulses dropped on random
// coordinates, random signs; every fifth group has all k on one coordinate
// (the largest energy, k^2).
std::vector<std::int8_t> random_points(std::mt19937_64& rng, std::size_t groups, std::size_t n, std::size_t k) {
    std::vector<std::int8_t> y(groups * n, 0);
    std::uniform_int_distribution<std::size_t> coord(0, n - 1);
    for (std::size_t g = 0; g < groups; ++g) {
        std::int8_t* p = y.data() + g * n;
        if (g % 5 == 4) {
            p[coord(rng)] = static_cast<std::int8_t>(k);
        } else {
            for (std::size_t t = 0; t < k; ++t) ++p[coord(rng)];
        }
        for (std::size_t i = 0; i < n; ++i)
            if (rng() & 1) p[i] = static_cast<std::int8_t>(-p[i]);
    }
    return y;
}

std::vector<std::uint32_t> random_codes(std::mt19937_64& rng, std::size_t count, std::size_t levels) {
    std::vector<std::uint32_t> c(count);
    std::uniform_int_distribution<std::uint32_t> code(0, static_cast<std::uint32_t>(levels - 1));
    for (auto& v : c) v = code(rng);
    return c;
}

std::vector<double> random_levels(std::mt19937_64& rng, std::size_t count) {
    std::vector<double> l(count);
    std::uniform_real_distribution<double> level(0.05, 4.0);
    for (auto& v : l) v = level(rng);
    return l;
}

std::vector<float> random_signs(std::mt19937_64& rng, std::size_t n) {
    std::vector<float> s(n);
    for (auto& v : s) v = (rng() & 1) ? -1.0f : 1.0f;
    return s;
}

// The plain definitions. A group's factor: float(s) * float(level / sqrt(E norm)),
// E the sum of its squared pulses.
std::vector<float> plain_factors(const std::int8_t* y8, const std::uint32_t* codes, std::size_t groups, std::size_t n,
                                 const std::vector<double>& levels, double norm, float scale) {
    std::vector<float> f(groups);
    for (std::size_t j = 0; j < groups; ++j) {
        std::int64_t e = 0;
        for (std::size_t i = 0; i < n; ++i) e += static_cast<std::int64_t>(y8[j * n + i]) * y8[j * n + i];
        f[j] = scale * static_cast<float>(levels[codes[j]] / std::sqrt(static_cast<double>(e) * norm));
    }
    return f;
}

// Not rotated: float(y_i) * its group's factor.
std::vector<float> plain_scaled(const std::int8_t* y8, const std::vector<float>& factors, std::size_t n) {
    std::vector<float> out(factors.size() * n);
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(y8[i]) * factors[i / n];
    return out;
}

// In place, every group of n: the butterfly stages half = 1 .. n / 2 (a, b -> a + b, a - b) in integers.
void plain_group_hadamard(std::vector<int>& z, std::size_t n) {
    for (std::size_t base = 0; base < z.size(); base += n)
        for (std::size_t half = 1; half < n; half *= 2)
            for (std::size_t i = base; i < base + n; ++i)
                if ((i & half) == 0) {
                    const int a = z[i], b = z[i + half];
                    z[i] = a + b;
                    z[i + half] = a - b;
                }
}

// The integer-stage rotation of a row: z = H_n y per group in integers, then
// float(z_i) * factor, the float stages half = n .. cols / 2, times the signs.
std::vector<float> plain_integer_stage(const std::int8_t* y8, const std::vector<float>& factors, std::size_t n,
                                       std::size_t cols, const std::vector<float>& signs) {
    std::vector<int> z(y8, y8 + cols);
    plain_group_hadamard(z, n);
    std::vector<float> v(cols);
    for (std::size_t i = 0; i < cols; ++i) v[i] = static_cast<float>(z[i]) * factors[i / n];
    for (std::size_t half = n; half < cols; half *= 2)
        for (std::size_t i = 0; i < cols; ++i)
            if ((i & half) == 0) {
                const float a = v[i], b = v[i + half];
                v[i] = a + b;
                v[i + half] = a - b;
            }
    for (std::size_t i = 0; i < cols; ++i) v[i] *= signs[i];
    return v;
}

// A copy of v one element past an aligned start, so that the kernels meet
// misaligned pointers as well (they load and store unaligned).
template <class T>
struct shifted {
    std::vector<T> storage;
    explicit shifted(const std::vector<T>& v) : storage(v.size() + 1) { std::copy(v.begin(), v.end(), data()); }
    T* data() { return storage.data() + 1; }
};

}  // namespace

TEST_CASE("simd kernels: this build's instruction-set kernels", "[simd]") {
    std::string built;
#if SVQ_KERNELS_AVX512BW
    built +=
        " AVX-512 BW (dense_factors_avx512, scale_dense8_avx512, int8_group_hadamard_avx512, "
        "int8_first_pass_avx512, integer_stage_dense_avx512)";
#endif
#if SVQ_KERNELS_AVX512F
    built += " AVX-512 F (stream_lines_avx512)";
#endif
    if (built.empty()) {
        WARN("no instruction-set-specific kernel compiled in this build (xsimd arch "
             << svq::simd::arch_name() << "): only the portable kernels are checked, against plain definitions");
    } else {
        WARN("compared bit for bit against the portable kernels:" << built);
    }
    // The decoder's streamer is the AVX-512 F one exactly where that file was compiled in.
#if SVQ_KERNELS_AVX512F
    using built_lines = svq::detail::stream_lines_avx512;
#else
    using built_lines = svq::detail::copy_lines_portable;
#endif
    REQUIRE(std::is_same_v<svq::detail::row_streamer, svq::detail::basic_row_streamer<built_lines>>);
}

TEST_CASE("simd kernels: dense factors, bit for bit", "[simd]") {
#if SVQ_KERNELS_AVX512BW
    INFO("dense_factors_avx512<16>, <32> against dense_factors_scalar");
#else
    WARN("no AVX-512 BW kernels in this build: dense_factors_scalar against the plain definition only");
#endif
    std::mt19937_64 rng(20240611);
    for (const std::size_t n : {std::size_t{16}, std::size_t{32}}) {
        for (const std::size_t k : pulse_counts) {
            // 16 levels: a table up to K = 127; 32 levels at K = 127: past
            // dense_units::max_entries, so the formula (the kernel's other branch).
            for (const std::size_t level_count : {std::size_t{16}, std::size_t{32}}) {
                const std::vector<double> levels = random_levels(rng, level_count);
                for (const double norm : {1.0, 4096.0}) {
                    const svq::detail::dense_units units(levels, k, norm);
                    for (const std::size_t groups : edge_groups) {
                        INFO("n = " << n << " K = " << k << " levels " << level_count << " norm " << norm << " groups "
                                    << groups << (units.table.empty() ? " (no table)" : ""));
                        const auto y8 = random_points(rng, groups, n, k);
                        const auto codes = random_codes(rng, groups, level_count);
                        const float scale = std::uniform_real_distribution<float>(0.01f, 2.0f)(rng);
                        const auto plain = plain_factors(y8.data(), codes.data(), groups, n, levels, norm, scale);
                        std::vector<float> portable(groups);
                        svq::detail::dense_factors_scalar(y8.data(), codes.data(), groups, n, units, scale,
                                                          portable.data());
                        REQUIRE_SAME_BITS(portable.data(), plain.data(), groups);
#if SVQ_KERNELS_AVX512BW
                        shifted<std::int8_t> y8s(y8);
                        std::vector<float> isa(groups, -1.0f);
                        std::vector<std::pair<std::size_t, std::size_t>> calls;  // after(first, count)
                        const auto after = [&](std::size_t first, std::size_t count) {
                            calls.emplace_back(first, count);
                        };
                        if (n == 16)
                            svq::detail::dense_factors_avx512<16>(y8s.data(), codes.data(), groups, units, scale,
                                                                  isa.data(), after);
                        else
                            svq::detail::dense_factors_avx512<32>(y8s.data(), codes.data(), groups, units, scale,
                                                                  isa.data(), after);
                        REQUIRE_SAME_BITS(isa.data(), portable.data(), groups);
                        // after(): blocks of 8 in order, then the rest, with a
                        // table; one call for all groups without.
                        if (units.table.empty()) {
                            REQUIRE(calls == std::vector<std::pair<std::size_t, std::size_t>>{{0, groups}});
                        } else {
                            std::size_t next = 0;
                            for (const auto& [first, count] : calls) {
                                REQUIRE(first == next);
                                REQUIRE(count == std::min<std::size_t>(8, groups - first));
                                next = first + count;
                            }
                            REQUIRE(next == groups);
                        }
#endif
                    }
                }
            }
        }
    }
}

TEST_CASE("simd kernels: dense scaling without rotation, bit for bit", "[simd]") {
#if SVQ_KERNELS_AVX512BW
    INFO(
        "scale_dense_groups8 (AVX-512 BW for n = 16, 32) and scale_dense8_avx512 against "
        "scale_dense_groups8_portable");
#else
    WARN("no AVX-512 BW kernels in this build: scale_dense_groups8_portable against the plain definition only");
#endif
    std::mt19937_64 rng(77);
    for (const std::size_t n : {std::size_t{8}, std::size_t{16}, std::size_t{32}}) {
        for (const std::size_t k : pulse_counts) {
            const std::vector<double> levels = random_levels(rng, 16);
            const svq::detail::dense_units units(levels, k, 1.0);
            for (const std::size_t groups : edge_groups) {
                INFO("n = " << n << " K = " << k << " groups " << groups);
                const auto y8 = random_points(rng, groups, n, k);
                const auto codes = random_codes(rng, groups, levels.size());
                const float scale = std::uniform_real_distribution<float>(0.01f, 2.0f)(rng);
                const auto plain =
                    plain_scaled(y8.data(), plain_factors(y8.data(), codes.data(), groups, n, levels, 1.0, scale), n);
                std::vector<float> factors(groups), portable(groups * n);
                svq::detail::scale_dense_groups8_portable(y8.data(), codes.data(), units, scale, groups, n,
                                                          factors.data(), portable.data());
                REQUIRE_SAME_BITS(portable.data(), plain.data(), groups * n);
                // The dispatcher the decoder calls (AVX-512 BW for n = 16 and 32 where built).
                shifted<std::int8_t> y8s(y8);
                shifted<float> out(std::vector<float>(groups * n, -1.0f));
                std::vector<float> scratch(groups);
                svq::detail::scale_dense_groups8(y8s.data(), codes.data(), units, scale, groups, n, scratch.data(),
                                                 out.data());
                REQUIRE_SAME_BITS(out.data(), portable.data(), groups * n);
#if SVQ_KERNELS_AVX512BW
                if (n != 8 && groups > 0) {  // the scaling kernel alone, on a middle range of groups
                    const std::size_t first = groups / 3, count = groups - first - groups / 4;
                    std::vector<float> isa(groups * n, -1.0f);
                    svq::detail::scale_dense8_avx512(y8.data(), factors.data(), first, count, n, isa.data());
                    REQUIRE_SAME_BITS(isa.data() + first * n, portable.data() + first * n, count * n);
                    REQUIRE(std::all_of(isa.begin(), isa.begin() + static_cast<std::ptrdiff_t>(first * n),
                                        [](float v) { return v == -1.0f; }));
                    REQUIRE(std::all_of(isa.begin() + static_cast<std::ptrdiff_t>((first + count) * n), isa.end(),
                                        [](float v) { return v == -1.0f; }));
                }
#endif
            }
        }
    }
}

TEST_CASE("simd kernels: int8 group Hadamard, exact", "[simd]") {
#if SVQ_KERNELS_AVX512BW
    INFO("int8_group_hadamard_avx512<16>, <32> against the integer stages written here");
    std::mt19937_64 rng(5);
    for (const std::size_t n : {std::size_t{16}, std::size_t{32}}) {
        for (const std::size_t k : pulse_counts) {
            for (const std::size_t groups : {std::size_t{4}, std::size_t{8}, std::size_t{12}, std::size_t{256}}) {
                if (groups * n % 64 != 0) continue;
                INFO("n = " << n << " K = " << k << " groups " << groups);
                const auto y8 = random_points(rng, groups, n, k);
                std::vector<int> z(y8.begin(), y8.end());
                plain_group_hadamard(z, n);
                std::vector<std::int8_t> isa = y8;
                const std::size_t bytes = groups * n,
                                  split = bytes / 64 / 2 * 64;  // two calls: [0, split), [split, bytes)
                if (n == 16) {
                    const svq::detail::int8_group_hadamard_avx512<16> h;
                    h(isa.data(), 0, split);
                    h(isa.data(), split, bytes);
                } else {
                    const svq::detail::int8_group_hadamard_avx512<32> h;
                    h(isa.data(), 0, split);
                    h(isa.data(), split, bytes);
                }
                REQUIRE(std::vector<int>(isa.begin(), isa.end()) == z);
            }
        }
    }
#else
    WARN(
        "no AVX-512 BW kernels in this build: the int8 Hadamard stages are not compiled; the portable "
        "integer stages are checked in the integer-stage rotation test");
    // The integer stages written here: H_n H_n = n I on every group.
    std::mt19937_64 rng(5);
    const auto y8 = random_points(rng, 8, 16, 22);
    std::vector<int> z(y8.begin(), y8.end());
    plain_group_hadamard(z, 16);
    plain_group_hadamard(z, 16);
    for (std::size_t i = 0; i < z.size(); ++i) REQUIRE(z[i] == 16 * y8[i]);
#endif
}

TEST_CASE("simd kernels: integer-stage rotation of a dense row, bit for bit", "[simd]") {
#if SVQ_KERNELS_AVX512BW
    INFO(
        "integer_stage_dense (AVX-512 BW: integer_stage_dense_avx512<16>, <32>, int8_first_pass_avx512) "
        "against integer_stage_dense_portable");
#else
    WARN("no AVX-512 BW kernels in this build: integer_stage_dense_portable against the plain definition only");
#endif
    std::mt19937_64 rng(4242);
    for (const std::size_t n : {std::size_t{8}, std::size_t{16}, std::size_t{32}}) {
        // cols = n (no float stage past the first pass for n = 32: cols / 64 is 0
        // and the portable body runs), 64 (one float stage for n = 32), ...,
        // 16384 (four stages in the first pass, then fwht_passes).
        for (std::size_t cols = n; cols <= 16384; cols *= 2) {
            for (const std::size_t k : pulse_counts) {
                INFO("n = " << n << " cols " << cols << " K = " << k);
                const std::size_t groups = cols / n;
                const std::vector<double> levels = random_levels(rng, 16);
                const svq::detail::dense_units units(levels, k, static_cast<double>(cols));
                const auto y8 = random_points(rng, groups, n, k);
                const auto codes = random_codes(rng, groups, levels.size());
                const auto signs = random_signs(rng, cols);
                const float scale = std::uniform_real_distribution<float>(0.01f, 2.0f)(rng);
                const auto plain = plain_integer_stage(
                    y8.data(),
                    plain_factors(y8.data(), codes.data(), groups, n, levels, static_cast<double>(cols), scale), n,
                    cols, signs);
                std::vector<float> factors(groups), portable(cols);
                std::vector<int> y(cols);
                svq::detail::integer_stage_dense_portable(y8.data(), codes.data(), units, scale, n, cols, signs.data(),
                                                          factors.data(), portable.data(), y.data());
                REQUIRE_SAME_BITS(portable.data(), plain.data(), cols);
                // The dispatcher the decoder calls.
                shifted<std::int8_t> y8s(y8);
                shifted<float> out(std::vector<float>(cols, -1.0f));
                svq::detail::integer_stage_dense(y8s.data(), codes.data(), units, scale, n, cols, signs.data(),
                                                 factors.data(), out.data(), y.data());
                REQUIRE_SAME_BITS(out.data(), portable.data(), cols);
                // Which body ran: the AVX-512 kernel leaves H_n y in y8, the portable one only reads y8.
                const bool isa = SVQ_KERNELS_AVX512BW != 0 && cols % 64 == 0 && (n == 16 || n == 32);
                std::vector<int> expect(y8.begin(), y8.end());
                if (isa) plain_group_hadamard(expect, n);
                REQUIRE(std::vector<int>(y8s.data(), y8s.data() + cols) == expect);
            }
        }
    }
}

TEST_CASE("simd kernels: row streamer, bit for bit", "[simd]") {
#if SVQ_KERNELS_AVX512F
    INFO("basic_row_streamer<stream_lines_avx512> against basic_row_streamer<copy_lines_portable>");
#else
    WARN("no AVX-512 F kernels in this build: the portable row streamer against a plain copy only");
#endif
    std::mt19937_64 rng(99);
    std::uniform_real_distribution<float> value(-1e6f, 1e6f);
    constexpr float guard = -7.5f;
    // Streams src (n floats) to dst + offset with `ticks` lines taken before
    // finish(), as the decoder does; returns the whole destination buffer.
    const auto stream = [&](auto streamer, const std::vector<float>& src, std::size_t offset, std::size_t ticks) {
        svq::detail::aligned_floats dst(src.size() + 64, guard);
        streamer.start(src.data(), dst.data() + offset, src.size());
        auto lines = streamer.take();
        for (std::size_t t = 0; t < ticks; ++t) lines();
        streamer.give_back(lines);
        streamer.finish();
        decltype(streamer)::fence();
        return std::vector<float>(dst.begin(), dst.end());
    };
    for (const std::size_t n : {0, 1, 15, 16, 17, 31, 32, 33, 100, 1000, 4096 + 5}) {
        std::vector<float> src(n);
        for (auto& v : src) v = value(rng);
        if (n > 2) src[1] = -0.0f;
        for (const std::size_t offset : {0, 1, 7, 15, 16}) {
            for (const std::size_t ticks : {std::size_t{0}, std::size_t{1}, n / 32, n}) {
                INFO("n = " << n << " offset " << offset << " ticks " << ticks);
                const auto portable =
                    stream(svq::detail::basic_row_streamer<svq::detail::copy_lines_portable>{}, src, offset, ticks);
                REQUIRE_SAME_BITS(portable.data() + offset, src.data(), n);
                REQUIRE(std::all_of(portable.begin(), portable.begin() + static_cast<std::ptrdiff_t>(offset),
                                    [&](float v) { return v == guard; }));
                REQUIRE(std::all_of(portable.begin() + static_cast<std::ptrdiff_t>(offset + n), portable.end(),
                                    [&](float v) { return v == guard; }));
#if SVQ_KERNELS_AVX512F
                const auto isa =
                    stream(svq::detail::basic_row_streamer<svq::detail::stream_lines_avx512>{}, src, offset, ticks);
                REQUIRE(isa.size() == portable.size());
                REQUIRE_SAME_BITS(isa.data(), portable.data(), isa.size());
#endif
            }
        }
    }
}

TEST_CASE("simd kernels: pulse and float dot products against the scalar sums", "[simd]") {
    // Portable kernels only (xsimd on every architecture). On dyadic inputs
    // whose sums fit a float's significand every order of summation is exact,
    // so the lane-wise sums must equal the scalar ones bit for bit.
    INFO("pulse_dot, float_dot on xsimd arch " << svq::simd::arch_name());
    std::mt19937_64 rng(3);
    std::uniform_int_distribution<int> pulse(-15, 15), eighths(-32, 32), quarters(-16, 16);
    for (const std::size_t n : {0, 1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 4096 + 3}) {
        INFO("n = " << n);
        std::vector<int> y(n);
        std::vector<float> x(n), a(n), b(n);
        for (std::size_t i = 0; i < n; ++i) {
            y[i] = pulse(rng);
            x[i] = static_cast<float>(eighths(rng)) / 8.0f;
            a[i] = static_cast<float>(eighths(rng)) / 8.0f;
            b[i] = static_cast<float>(quarters(rng)) / 4.0f;
        }
        float py = 0.0f, ab = 0.0f;
        for (std::size_t i = 0; i < n; ++i) {
            py += static_cast<float>(y[i]) * x[i];
            ab += a[i] * b[i];
        }
        REQUIRE(std::bit_cast<std::uint32_t>(svq::detail::pulse_dot(y.data(), x.data(), n)) ==
                std::bit_cast<std::uint32_t>(py));
        REQUIRE(std::bit_cast<std::uint32_t>(svq::detail::float_dot(a.data(), b.data(), n)) ==
                std::bit_cast<std::uint32_t>(ab));
    }
}
