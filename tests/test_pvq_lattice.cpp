// The coordinate-order lattice (tests/oracle/coordinate_lattice.hpp) checked
// against brute-force enumeration, and the library's split-order lattice
// (svq::split_lattice over pvq_split_index) checked against it: the same point
// set, a bijection onto [0, V(N, K)), and errors that name the bad value.
#include "catch.hpp"

#include "oracle/coordinate_lattice.hpp"

#include <svq/format/split_index.hpp>
#include <svq/format/split_lattice.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <set>
#include <type_traits>
#include <utility>
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
constexpr int wide_round_trips = 100'000;  // the oracle (the library's index has its own round trips below)
#endif

}  // namespace

TEST_CASE("oracle: coordinate-order rank/unrank is a bijection for every N <= 6, K <= 8 (exhaustive)") {
    for (std::size_t n = 1; n <= 6; ++n) {
        for (std::size_t k = 1; k <= 8; ++k) {
            CAPTURE(n, k);
            const svq::oracle::pvq_coordinate_lattice<std::uint32_t> lattice(n, k);
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

TEST_CASE("oracle order: zero first, then +j before -j, lexicographic by coordinate") {
    const svq::oracle::pvq_coordinate_lattice<std::uint32_t> lattice(2, 2);  // V = 8
    const std::vector<std::vector<int>> expected = {{0, 2}, {0, -2}, {1, 1}, {1, -1}, {-1, 1}, {-1, -1}, {2, 0}, {-2, 0}};
    std::vector<int> y(2);
    for (std::uint32_t i = 0; i < 8; ++i) {
        lattice.unrank(i, y);
        REQUIRE(y == expected[i]);
    }
}

TEST_CASE("oracle: random round trips at (N,K) = (256,760), an index of 1024 bits") {
    using index = svq::wide_uint<1024>;
    const svq::oracle::pvq_coordinate_lattice<index> lattice(256, 760);
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

TEST_CASE("oracle: random round trips at the design sizes, 64-bit and wide indices") {
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
    check(svq::oracle::pvq_coordinate_lattice<std::uint32_t>(8, 16));
    check(svq::oracle::pvq_coordinate_lattice<std::uint64_t>(16, 27));
    check(svq::oracle::pvq_coordinate_lattice<svq::wide_uint<128>>(32, 50));
    check(svq::oracle::pvq_coordinate_lattice<svq::wide_uint<192>>(64, 96));
    check(svq::oracle::pvq_coordinate_lattice<svq::wide_uint<384>>(128, 187));
}

TEST_CASE("oracle errors name the bad value") {
    REQUIRE_THROWS_AS(svq::oracle::pvq_coordinate_lattice<std::uint64_t>(0, 5), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::oracle::pvq_coordinate_lattice<std::uint64_t>(5, 0), svq::invalid_argument);
    REQUIRE_THROWS_WITH(svq::oracle::pvq_coordinate_lattice<std::uint64_t>(32, 50), Catch::Contains("96 bits"));
    const svq::oracle::pvq_coordinate_lattice<std::uint32_t> lattice(4, 3);
    std::vector<int> y(4);
    REQUIRE_THROWS_AS(lattice.unrank(lattice.size(), y), svq::corrupt_data);
    REQUIRE_THROWS_WITH(lattice.unrank(lattice.size(), y), Catch::Contains(std::to_string(lattice.size())));
    std::vector<int> short_y(3);
    REQUIRE_THROWS_AS(lattice.unrank(0u, short_y), svq::invalid_argument);
    REQUIRE_THROWS_AS(lattice.rank(std::vector<int>{1, 1, 0, 0}), svq::invalid_argument);  // sum 2, K = 3
    REQUIRE_THROWS_WITH(lattice.rank(std::vector<int>{1, 1, 0, 0}), Catch::Contains("sum |y_i| = 2"));
    REQUIRE_THROWS_AS(lattice.rank(std::vector<int>{1, 1, 1}), svq::invalid_argument);
}

// The library's split order against the oracle. Sizes: every N <= 6, K <= 8
// (binary nodes down to one coordinate), and N = 16, 17, 31, 32 at small K,
// where the nodes of 16 split four ways (V(16, K) fits a word).
TEST_CASE("split_lattice: the same point set as the oracle, a bijection onto [0, V) (exhaustive)") {
    std::vector<std::pair<std::size_t, std::size_t>> sizes;
    for (std::size_t n = 1; n <= 6; ++n)
        for (std::size_t k = 1; k <= 8; ++k) sizes.emplace_back(n, k);
    for (std::size_t k = 1; k <= 3; ++k) sizes.emplace_back(16, k);
    sizes.emplace_back(17, 2);
    sizes.emplace_back(31, 2);
    sizes.emplace_back(32, 2);
    for (const auto& [n, k] : sizes) {
        CAPTURE(n, k);
        const svq::oracle::pvq_coordinate_lattice<std::uint64_t> oracle(n, k);
        const svq::split_lattice<std::uint64_t> split(n, k);
        REQUIRE(split.dim() == n);
        REQUIRE(split.pulses() == k);
        REQUIRE(split.size() == oracle.size());
        REQUIRE(split.index_bits() == oracle.index_bits());
        const svq::pvq_split_index& raw = split.split_index();
        REQUIRE(raw.limbs() == 1);
        const std::uint64_t size = split.size();
        std::set<std::vector<int>> split_points, oracle_points;
        std::vector<int> y(n);
        for (std::uint64_t i = 0; i < size; ++i) {
            split.unrank(i, y);
            REQUIRE(oracle.contains(y));  // a point of P(n, k)
            REQUIRE(split.contains(y));
            REQUIRE(split.rank(y) == i);  // rank(unrank(i)) == i
            std::uint64_t word = ~std::uint64_t{0};
            raw.rank(y.data(), &word);  // the limb-level coder agrees with the typed one
            REQUIRE(word == i);
            split_points.insert(y);
            oracle.unrank(i, y);
            oracle_points.insert(y);
        }
        REQUIRE(split_points.size() == size);  // distinct points
        REQUIRE(split_points == oracle_points);  // the same set as the oracle's
        // And unrank(rank(p)) == p for every point of the set.
        std::vector<int> back(n);
        for (const auto& p : oracle_points) {
            const std::uint64_t i = split.rank(p);
            REQUIRE(i < size);
            split.unrank(i, back);
            REQUIRE(back == p);
        }
    }
}

TEST_CASE("split_lattice: random round trips at the design sizes and at 1024 bits, points checked by the oracle") {
    std::mt19937_64 rng(17);
    auto check = [&rng](const auto& split, int iterations) {
        using index = typename std::decay_t<decltype(split)>::index_type;
        CAPTURE(split.dim(), split.pulses());
        const svq::oracle::pvq_coordinate_lattice<index> oracle(split.dim(), split.pulses());
        REQUIRE(split.size() == oracle.size());
        REQUIRE(split.index_bits() == svq::pvq_index_bits(split.dim(), split.pulses()));
        std::vector<int> y(split.dim()), back(split.dim());
        for (int iter = 0; iter < iterations; ++iter) {
            const auto p = random_point(split.dim(), split.pulses(), rng);
            const index i = split.rank(p);
            REQUIRE(i < split.size());
            split.unrank(i, back);
            REQUIRE(back == p);
            if constexpr (svq::detail::is_wide_uint<index>::value) {
                const index j = random_below(split.size(), rng);
                split.unrank(j, y);
                REQUIRE(oracle.contains(y));
                REQUIRE(split.rank(y) == j);
            }
        }
        // The ends of the range.
        index last = split.size();
        --last;
        split.unrank(last, y);
        REQUIRE(oracle.contains(y));
        REQUIRE(split.rank(y) == last);
        split.unrank(index(0u), y);
        REQUIRE(oracle.contains(y));
        REQUIRE(split.rank(y) == index(0u));
    };
    check(svq::split_lattice<std::uint32_t>(8, 16), 20000);
    check(svq::split_lattice<std::uint64_t>(16, 27), 20000);
    check(svq::split_lattice<svq::wide_uint<128>>(32, 50), 20000);
    check(svq::split_lattice<svq::wide_uint<256>>(32, 50), 2000);  // a wider index type than needed
    check(svq::split_lattice<svq::wide_uint<192>>(64, 96), 20000);
    check(svq::split_lattice<svq::wide_uint<384>>(128, 187), 20000);
    const svq::split_lattice<svq::wide_uint<1024>> widest(256, 760);
    REQUIRE(widest.index_bits() == 1024);
    REQUIRE(widest.size().bit_width() == 1024);
    check(widest, 2000);
}

TEST_CASE("split_lattice errors name the bad value") {
    REQUIRE_THROWS_AS(svq::split_lattice<std::uint64_t>(0, 5), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::split_lattice<std::uint64_t>(5, 0), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::split_lattice<std::uint64_t>(32, 50), svq::overflow_error);
    REQUIRE_THROWS_WITH(svq::split_lattice<std::uint64_t>(32, 50), Catch::Contains("96 bits"));
    // More than the 1024 bits of the format's index, even in a type that holds it.
    REQUIRE_THROWS_AS(svq::split_lattice<svq::wide_uint<2048>>(256, 800), svq::overflow_error);
    REQUIRE_THROWS_WITH(svq::split_lattice<svq::wide_uint<2048>>(256, 800), Catch::Contains("at most 1024"));

    const svq::split_lattice<std::uint32_t> lattice(4, 3);  // V = (8 K^3 + 16 K) / 3 = 88
    REQUIRE(lattice.size() == 88u);
    std::vector<int> y(4);
    REQUIRE_THROWS_AS(lattice.unrank(lattice.size(), y), svq::corrupt_data);
    REQUIRE_THROWS_WITH(lattice.unrank(lattice.size(), y), Catch::Contains("index 88 is not below") && Catch::Contains("= 88"));
    REQUIRE_THROWS_AS(lattice.unrank(~std::uint32_t{0}, y), svq::corrupt_data);
    std::vector<int> short_y(3);
    REQUIRE_THROWS_AS(lattice.unrank(0u, short_y), svq::invalid_argument);
    REQUIRE_THROWS_WITH(lattice.unrank(0u, short_y), Catch::Contains("3 entries"));
    REQUIRE_THROWS_AS(lattice.rank(std::vector<int>{1, 1, 0, 0}), svq::invalid_argument);  // sum 2, K = 3
    REQUIRE_THROWS_WITH(lattice.rank(std::vector<int>{1, 1, 0, 0}), Catch::Contains("sum |y_i| = 2"));
    REQUIRE_THROWS_WITH(lattice.rank(std::vector<int>{1, -1, 0, 2, 0}), Catch::Contains("5 entries"));
    REQUIRE_FALSE(lattice.contains(std::vector<int>{1, 1, 0, 0}));
    REQUIRE_FALSE(lattice.contains(std::vector<int>{1, 1, 1}));
    REQUIRE(lattice.contains(std::vector<int>{1, -1, 0, 1}));

    // A wide index at and beyond V, in decimal.
    const svq::split_lattice<svq::wide_uint<128>> wide(32, 50);
    std::vector<int> y32(32);
    REQUIRE_THROWS_WITH(wide.unrank(wide.size(), y32), Catch::Contains(svq::to_decimal(wide.size())));
    svq::wide_uint<128> beyond = wide.size();
    beyond <<= 20;
    REQUIRE_THROWS_AS(wide.unrank(beyond, y32), svq::corrupt_data);
}
