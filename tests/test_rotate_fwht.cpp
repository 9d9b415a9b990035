#include "catch.hpp"

#include <svq/rotate/fwht.hpp>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <random>
#include <vector>

namespace {

template <class T>
std::vector<T> random_values(std::size_t n, std::uint64_t seed, bool wide_exponents = false) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    std::uniform_int_distribution<int> exponent(-20, 20);
    std::vector<T> values(n);
    for (auto& v : values) v = static_cast<T>(wide_exponents ? std::ldexp(uniform(rng), exponent(rng)) : uniform(rng));
    return values;
}

// Sylvester Hadamard entry: H[i][j] = (-1)^popcount(i & j).
double sylvester(std::size_t i, std::size_t j) { return std::popcount(i & j) % 2 == 0 ? 1.0 : -1.0; }

template <class T>
double relative_difference(const std::vector<T>& a, const std::vector<T>& b) {
    double diff = 0.0;
    double norm = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        diff += (static_cast<double>(a[i]) - static_cast<double>(b[i])) * (static_cast<double>(a[i]) - static_cast<double>(b[i]));
        norm += static_cast<double>(b[i]) * static_cast<double>(b[i]);
    }
    return std::sqrt(diff / norm);
}

}  // namespace

TEST_CASE("fwht equals the dense orthonormal Sylvester Hadamard product") {
    for (std::size_t n = 1; n <= 1024; n *= 2) {
        CAPTURE(n);
        const std::vector<float> input = random_values<float>(n, 1000 + n);
        std::vector<double> expected(n, 0.0);
        for (std::size_t i = 0; i < n; ++i) {
            for (std::size_t j = 0; j < n; ++j) expected[i] += sylvester(i, j) * input[j];
            expected[i] /= std::sqrt(static_cast<double>(n));
        }
        std::vector<float> single = input;
        svq::fwht(single);
        std::vector<double> twice(input.begin(), input.end());
        svq::fwht(std::span<double>(twice));
        double max_error_float = 0.0;
        double max_error_double = 0.0;
        for (std::size_t i = 0; i < n; ++i) {
            max_error_float = std::max(max_error_float, std::abs(single[i] - expected[i]));
            max_error_double = std::max(max_error_double, std::abs(twice[i] - expected[i]));
        }
        CHECK(max_error_float <= 1e-5);
        CHECK(max_error_double <= 1e-12);
    }
}

TEST_CASE("fwht applied twice is the identity") {
    for (std::size_t n = 1; n <= 16384; n *= 2) {
        CAPTURE(n);
        const std::vector<float> input = random_values<float>(n, 2000 + n);
        std::vector<float> values = input;
        svq::fwht(values);
        svq::fwht(values);
        CHECK(relative_difference(values, input) <= 1e-6);

        const std::vector<double> input_double = random_values<double>(n, 3000 + n);
        std::vector<double> values_double = input_double;
        svq::fwht(std::span<double>(values_double));
        svq::fwht(std::span<double>(values_double));
        CHECK(relative_difference(values_double, input_double) <= 1e-14);
    }
}

TEST_CASE("fwht keeps the Euclidean norm") {
    const std::vector<float> input = random_values<float>(4096, 7);
    std::vector<float> values = input;
    svq::fwht(values);
    double before = 0.0;
    double after = 0.0;
    for (std::size_t i = 0; i < input.size(); ++i) {
        before += static_cast<double>(input[i]) * input[i];
        after += static_cast<double>(values[i]) * values[i];
    }
    CHECK(std::abs(std::sqrt(after) - std::sqrt(before)) <= 1e-6 * std::sqrt(before));
}

TEST_CASE("fwht SIMD body equals the scalar body bit for bit") {
    INFO("xsimd architecture: " << svq::simd::arch_name());
    for (std::size_t n = 1; n <= 16384; n *= 2) {
        for (const bool wide : {false, true}) {
            CAPTURE(n, wide);
            const std::vector<float> input = random_values<float>(n, 4000 + n, wide);
            std::vector<float> scalar = input;
            std::vector<float> vectorized = input;
            svq::detail::fwht_scalar(scalar.data(), n);
            if constexpr (svq::simd::has_simd) {
                svq::detail::fwht_kernel(svq::simd::default_arch{}, vectorized.data(), n);
            } else {
                svq::fwht(vectorized);
            }
            CHECK(std::memcmp(scalar.data(), vectorized.data(), n * sizeof(float)) == 0);
            std::vector<float> dispatched = input;
            svq::fwht(dispatched);
            CHECK(std::memcmp(scalar.data(), dispatched.data(), n * sizeof(float)) == 0);

            const std::vector<double> input_double = random_values<double>(n, 5000 + n, wide);
            std::vector<double> scalar_double = input_double;
            std::vector<double> vectorized_double = input_double;
            svq::detail::fwht_scalar(scalar_double.data(), n);
            if constexpr (svq::simd::has_simd) {
                svq::detail::fwht_kernel(svq::simd::default_arch{}, vectorized_double.data(), n);
            } else {
                svq::fwht(std::span<double>(vectorized_double));
            }
            CHECK(std::memcmp(scalar_double.data(), vectorized_double.data(), n * sizeof(double)) == 0);
        }
    }
}

TEST_CASE("hadamard stages from any first stage: SIMD body == scalar body, and == the transform's tail") {
    INFO("xsimd architecture: " << svq::simd::arch_name());
    for (std::size_t n = 1; n <= 8192; n *= 2) {
        const std::vector<float> input = random_values<float>(n, 6000 + n, true);
        const std::vector<float> post = random_values<float>(n, 7000 + n);
        for (std::size_t first = 1; first <= n; first *= 2) {
            for (const bool with_post : {false, true}) {
                CAPTURE(n, first, with_post);
                const float* p = with_post ? post.data() : nullptr;
                std::vector<float> scalar = input, vectorized = input, dispatched = input;
                svq::detail::hadamard_stages_scalar(scalar.data(), n, first, p);
                if constexpr (svq::simd::has_simd)
                    svq::detail::hadamard_stages_kernel(svq::simd::default_arch{}, vectorized.data(), n, first, p);
                else
                    svq::detail::hadamard_stages(vectorized.data(), n, first, p);
                svq::detail::hadamard_stages(dispatched.data(), n, first, p);
                REQUIRE(std::memcmp(scalar.data(), vectorized.data(), n * sizeof(float)) == 0);
                REQUIRE(std::memcmp(scalar.data(), dispatched.data(), n * sizeof(float)) == 0);
                // The definition: stages first, 2 first, ... of H (an exact oracle in double on
                // small integers: every value stays an integer below 2^24).
                if (!with_post && n <= 1024) {
                    std::vector<float> ints(n);
                    for (std::size_t i = 0; i < n; ++i) ints[i] = static_cast<float>(static_cast<int>(i % 7) - 3);
                    std::vector<float> got = ints;
                    svq::detail::hadamard_stages(got.data(), n, first, static_cast<const float*>(nullptr));
                    // Stages from `first` on = H_(n/first) (x) I_first: out[i] = sum_j H[i/first][j/first] x[j] over
                    // j with j % first == i % first.
                    for (std::size_t i = 0; i < n; ++i) {
                        double e = 0.0;
                        for (std::size_t j = i % first; j < n; j += first) e += sylvester(i / first, j / first) * ints[j];
                        REQUIRE(static_cast<double>(got[i]) == e);
                    }
                }
            }
        }
        // first = 1 and the scale: the orthonormal transform, bit for bit.
        std::vector<float> stages = input, whole = input;
        svq::detail::hadamard_stages(stages.data(), n, 1, static_cast<const float*>(nullptr));
        for (float& v : stages) v *= svq::detail::fwht_scale<float>(n);
        svq::fwht(whole);
        REQUIRE(std::memcmp(stages.data(), whole.data(), n * sizeof(float)) == 0);
    }
}

TEST_CASE("fwht of a unit vector is a scaled Hadamard column") {
    // Exact in float: every output is +-1/32 (2^-5), a power of two.
    const std::size_t n = 1024;
    for (const std::size_t column : {std::size_t{0}, std::size_t{1}, std::size_t{513}, std::size_t{1023}}) {
        std::vector<float> values(n, 0.0F);
        values[column] = 1.0F;
        svq::fwht(values);
        std::size_t exact = 0;
        for (std::size_t i = 0; i < n; ++i) exact += values[i] == static_cast<float>(sylvester(i, column) / 32.0);
        CHECK(exact == n);
    }
}

TEST_CASE("fwht rejects lengths that are not powers of two") {
    std::vector<float> values(1000);
    REQUIRE_THROWS_AS(svq::fwht(std::span<float>(values.data(), 0)), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::fwht(std::span<float>(values.data(), 3)), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::fwht(std::span<float>(values.data(), 1000)), svq::invalid_argument);
    REQUIRE_THROWS_WITH(svq::fwht(std::span<float>(values.data(), 6)), "fwht: length n=6 is not a power of two");
    std::vector<double> doubles(12);
    REQUIRE_THROWS_WITH(svq::fwht(std::span<double>(doubles)), "fwht: length n=12 is not a power of two");
    // A failed call leaves the data untouched.
    std::vector<float> untouched(3, 2.0F);
    REQUIRE_THROWS_AS(svq::fwht(untouched), svq::invalid_argument);
    CHECK(untouched == std::vector<float>(3, 2.0F));
}
