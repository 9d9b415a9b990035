#include "catch.hpp"

#include <svq/pvq/lattice.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <set>
#include <vector>

namespace {

// Uniform random index in [0, bound) by rejection on bit_width(bound) random bits.
template <class W>
W random_below(const W& bound, std::mt19937_64& rng) {
    const std::size_t width = bound.bit_width();
    for (;;) {
        W v;
        for (auto& w : v.words()) w = rng();
        if (width < W::bits) {
            v <<= (W::bits - width);
            v >>= (W::bits - width);
        }
        if (v < bound) return v;
    }
}

// Random point of P(n, k): k pulses dropped uniformly on n coordinates, random signs.
std::vector<int> random_point(std::size_t n, std::size_t k, std::mt19937_64& rng) {
    std::vector<int> y(n, 0);
    for (std::size_t p = 0; p < k; ++p) ++y[rng() % n];
    for (auto& v : y)
        if (rng() & 1u) v = -v;
    return y;
}

#ifdef SVQ_SANITIZE_BUILD
constexpr int wide_round_trips = 2000;  // sanitizers are ~20x slower; the full count runs in the normal build
#else
constexpr int wide_round_trips = 1'000'000;
#endif

}  // namespace

TEST_CASE("rank/unrank is a bijection for every N <= 6, K <= 8 (exhaustive)") {
    for (std::size_t n = 1; n <= 6; ++n) {
        for (std::size_t k = 1; k <= 8; ++k) {
            CAPTURE(n, k);
            const svq::pvq_lattice<std::uint32_t> lattice(n, k);
            const std::uint32_t size = lattice.size();
            std::set<std::vector<int>> seen;
            std::vector<int> y(n);
            for (std::uint32_t i = 0; i < size; ++i) {
                lattice.unrank(i, y);
                REQUIRE(lattice.contains(y));
                REQUIRE(lattice.rank(y) == i);
                seen.insert(y);
            }
            REQUIRE(seen.size() == size);  // distinct points
            // ... and every point of P(n,k) is reached: enumerate all of Z^n in the box [-k, k]^n.
            std::size_t box_points = 0;
            std::vector<int> z(n, -static_cast<int>(k));
            for (;;) {
                long long s = 0;
                for (int v : z) s += std::llabs(v);
                if (s == static_cast<long long>(k)) {
                    ++box_points;
                    REQUIRE(seen.count(z) == 1);
                }
                std::size_t d = 0;
                while (d < n && z[d] == static_cast<int>(k)) z[d++] = -static_cast<int>(k);
                if (d == n) break;
                ++z[d];
            }
            REQUIRE(box_points == size);
        }
    }
}

TEST_CASE("order: zero first, then +j before -j, lexicographic by coordinate") {
    const svq::pvq_lattice<std::uint32_t> lattice(2, 2);  // V = 8
    const std::vector<std::vector<int>> expected = {{0, 2}, {0, -2}, {1, 1}, {1, -1}, {-1, 1}, {-1, -1}, {2, 0}, {-2, 0}};
    std::vector<int> y(2);
    for (std::uint32_t i = 0; i < 8; ++i) {
        lattice.unrank(i, y);
        REQUIRE(y == expected[i]);
    }
}

TEST_CASE("random round trips at (N,K) = (256,760), an index of 1024 bits") {
    using index = svq::wide_uint<1024>;
    const svq::pvq_lattice<index> lattice(256, 760);
    REQUIRE(lattice.index_bits() == 1024);
    REQUIRE(lattice.size().bit_width() == 1024);
    std::mt19937_64 rng(2024);
    std::vector<int> y(256), back(256);
    for (int iter = 0; iter < wide_round_trips; ++iter) {
        if (iter % 2 == 0) {
            const index i = random_below(lattice.size(), rng);
            lattice.unrank_unchecked(i, y);
            REQUIRE(lattice.contains(y));
            REQUIRE(lattice.rank_unchecked(y) == i);
        } else {
            const auto p = random_point(256, 760, rng);
            const index i = lattice.rank_unchecked(p);
            REQUIRE(i < lattice.size());
            lattice.unrank_unchecked(i, back);
            REQUIRE(back == p);
        }
    }
    // The extremes of the range.
    index last = lattice.size();
    --last;
    lattice.unrank(last, y);
    REQUIRE(y.front() == -760);  // the last block: all pulses negative on the first coordinate
    lattice.unrank(index(0u), y);
    REQUIRE(y.back() == 760);  // the first: every coordinate but the last is zero
}

TEST_CASE("random round trips at the design sizes, 64-bit and wide indices") {
    std::mt19937_64 rng(5);
    auto check = [&rng](const auto& lattice) {
        std::vector<int> y(lattice.dim()), back(lattice.dim());
        for (int iter = 0; iter < 20000; ++iter) {
            const auto p = random_point(lattice.dim(), lattice.pulses(), rng);
            const auto i = lattice.rank(p);
            REQUIRE(i < lattice.size());
            lattice.unrank(i, back);
            REQUIRE(back == p);
        }
    };
    check(svq::pvq_lattice<std::uint32_t>(8, 16));
    check(svq::pvq_lattice<std::uint64_t>(16, 27));
    check(svq::pvq_lattice<svq::wide_uint<128>>(32, 50));
    check(svq::pvq_lattice<svq::wide_uint<192>>(64, 96));
    check(svq::pvq_lattice<svq::wide_uint<384>>(128, 187));
}

TEST_CASE("lattice errors name the bad value") {
    REQUIRE_THROWS_AS(svq::pvq_lattice<std::uint64_t>(0, 5), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::pvq_lattice<std::uint64_t>(5, 0), svq::invalid_argument);
    REQUIRE_THROWS_WITH(svq::pvq_lattice<std::uint64_t>(32, 50), Catch::Contains("96 bits"));
    const svq::pvq_lattice<std::uint32_t> lattice(4, 3);
    std::vector<int> y(4);
    REQUIRE_THROWS_AS(lattice.unrank(lattice.size(), y), svq::corrupt_data);
    REQUIRE_THROWS_WITH(lattice.unrank(lattice.size(), y), Catch::Contains(std::to_string(lattice.size())));
    std::vector<int> short_y(3);
    REQUIRE_THROWS_AS(lattice.unrank(0u, short_y), svq::invalid_argument);
    REQUIRE_THROWS_AS(lattice.rank(std::vector<int>{1, 1, 0, 0}), svq::invalid_argument);  // sum 2, K = 3
    REQUIRE_THROWS_WITH(lattice.rank(std::vector<int>{1, 1, 0, 0}), Catch::Contains("sum |y_i| = 2"));
    REQUIRE_THROWS_AS(lattice.rank(std::vector<int>{1, 1, 1}), svq::invalid_argument);
}
