#include "catch.hpp"

#include <svq/pvq/count.hpp>

#include <cstdint>

using big = svq::wide_uint<4096>;

namespace {
// Closed form sum_{i>=1} 2^i C(N,i) C(K-1,i-1), evaluated with wide integers.
big binomial(std::size_t n, std::size_t r) {
    if (r > n) return big(0u);
    big c(1u);
    for (std::size_t i = 1; i <= r; ++i) {  // c = c * (n - r + i) / i stays integral at each step
        c.mul_word(n - r + i);
        c.div_word(i);
    }
    return c;
}
big closed_form(std::size_t n, std::size_t k) {
    if (k == 0) return big(1u);
    big total(0u);
    for (std::size_t i = 1; i <= n && i <= k; ++i) total += (big(1u) << i) * binomial(n, i) * binomial(k - 1, i - 1);
    return total;
}
}  // namespace

TEST_CASE("V(N,K) matches the closed form sum 2^i C(N,i) C(K-1,i-1)") {
    for (std::size_t n = 0; n <= 40; ++n)
        for (std::size_t k = 0; k <= 60; ++k) {
            CAPTURE(n, k);
            REQUIRE(svq::pvq_count<big>(n, k) == closed_form(n, k));
        }
    for (auto [n, k] : {std::pair<std::size_t, std::size_t>{128, 187}, {256, 760}, {64, 96}, {200, 30}})
        REQUIRE(svq::pvq_count<big>(n, k) == closed_form(n, k));
}

TEST_CASE("V(N,K) matches the small-N closed forms") {
    for (std::uint64_t k = 1; k <= 2000; ++k) {
        CAPTURE(k);
        REQUIRE(svq::pvq_count<std::uint64_t>(1, k) == 2);
        REQUIRE(svq::pvq_count<std::uint64_t>(2, k) == 4 * k);
        REQUIRE(svq::pvq_count<std::uint64_t>(3, k) == 4 * k * k + 2);
        REQUIRE(svq::pvq_count<std::uint64_t>(4, k) == (8 * k * k * k + 16 * k) / 3);
        if (k <= 200) REQUIRE(svq::pvq_count<std::uint64_t>(5, k) == (4 * k * k * k * k + 20 * k * k + 6) / 3);
    }
    REQUIRE(svq::pvq_count<std::uint64_t>(0, 0) == 1);
    REQUIRE(svq::pvq_count<std::uint64_t>(0, 3) == 0);
    REQUIRE(svq::pvq_count<std::uint64_t>(9, 0) == 1);
}

TEST_CASE("index bits of the design's reference sizes") {
    REQUIRE(svq::pvq_index_bits(8, 16) == 24);
    REQUIRE(svq::pvq_index_bits(16, 27) == 48);
    REQUIRE(svq::pvq_index_bits(32, 50) == 96);
    REQUIRE(svq::pvq_index_bits(64, 96) == 192);
    REQUIRE(svq::pvq_index_bits(128, 187) == 384);
    REQUIRE(svq::pvq_index_bits(256, 760) == 1024);
    REQUIRE(svq::pvq_index_bits(1, 1) == 1);   // V = 2
    REQUIRE(svq::pvq_index_bits(5, 0) == 0);   // V = 1
    REQUIRE_THROWS_AS(svq::pvq_index_bits(5000, 5000), svq::overflow_error);
}

TEST_CASE("V(N,K) at compile time") {
    STATIC_REQUIRE(svq::pvq_count_v<std::uint32_t, 3, 5> == 4 * 25 + 2);
    constexpr auto v816 = svq::pvq_count_v<std::uint64_t, 8, 16>;
    STATIC_REQUIRE(v816 == 15158272ull);
    STATIC_REQUIRE(v816 > (1ull << 23) && v816 <= (1ull << 24));
    constexpr auto v3250 = svq::pvq_count_v<svq::wide_uint<128>, 32, 50>;
    STATIC_REQUIRE(v3250.bit_width() == 96);
    REQUIRE(v3250.to_string() == "61062541658627199297301628928");
}

TEST_CASE("an (N,K) whose index does not fit the index type throws, naming N, K and the bits") {
    REQUIRE_THROWS_AS(svq::pvq_count<std::uint64_t>(32, 50), svq::overflow_error);
    REQUIRE_THROWS_WITH(svq::pvq_count<std::uint64_t>(32, 50),
                        Catch::Contains("N=32") && Catch::Contains("K=50") && Catch::Contains("96 bits"));
    REQUIRE_THROWS_WITH(svq::pvq_count<svq::wide_uint<128>>(128, 187), Catch::Contains("384 bits"));
    REQUIRE_NOTHROW(svq::pvq_count<svq::wide_uint<384>>(128, 187));
    // Boundary: V(8,16) needs 24 bits and fits a 32-bit index; a 16-bit index does not hold it.
    REQUIRE_NOTHROW(svq::pvq_count<std::uint32_t>(8, 16));
    REQUIRE_THROWS_AS(svq::pvq_count<std::uint16_t>(8, 16), svq::overflow_error);
}

TEST_CASE("count table satisfies the recurrence and the U identities") {
    svq::pvq_count_table<svq::wide_uint<256>> t(40, 70);
    for (std::size_t n = 1; n <= 40; ++n)
        for (std::size_t k = 1; k <= 70; ++k) {
            REQUIRE(t(n, k) == t(n - 1, k) + t(n, k - 1) + t(n - 1, k - 1));
            if (k < 70) REQUIRE(t(n, k) == t.u(n, k) + t.u(n, k + 1));
            REQUIRE(t(n, k) == svq::pvq_count<svq::wide_uint<256>>(n, k));
        }
    REQUIRE(t.size() == svq::pvq_count<svq::wide_uint<256>>(40, 70));
}
