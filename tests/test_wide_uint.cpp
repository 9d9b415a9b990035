#include "catch.hpp"

#include <svq/core/limbs.hpp>
#include <svq/core/wide_uint.hpp>

#include <fmt/format.h>

#include <array>
#include <bit>
#include <cstdint>
#include <vector>
#include <random>

using u128 = svq::detail::uint128;
using w128 = svq::wide_uint<128>;

namespace {
w128 from128(u128 v) {
    w128 r;
    r.words()[0] = static_cast<std::uint64_t>(v);
    r.words()[1] = static_cast<std::uint64_t>(v >> 64);
    return r;
}
u128 to128(const w128& w) { return (static_cast<u128>(w.words()[1]) << 64) | w.words()[0]; }
}  // namespace

TEST_CASE("wide_uint<128> agrees with unsigned __int128 on random operands") {
    std::mt19937_64 rng(12345);
    for (int iter = 0; iter < 200000; ++iter) {
        u128 a = (static_cast<u128>(rng()) << 64) | rng();
        u128 b = (static_cast<u128>(rng()) << 64) | rng();
        if (iter % 4 == 1) b >>= (rng() % 128);  // mix magnitudes
        if (iter % 4 == 2) a >>= (rng() % 128);
        const auto s = static_cast<std::size_t>(rng() % 140);
        const w128 wa = from128(a), wb = from128(b);
        REQUIRE(to128(wa + wb) == a + b);
        REQUIRE(to128(wa - wb) == a - b);
        REQUIRE(to128(wa * wb) == a * b);
        REQUIRE((wa < wb) == (a < b));
        REQUIRE((wa == wb) == (a == b));
        REQUIRE(to128(wa << s) == (s >= 128 ? u128{0} : a << s));
        REQUIRE(to128(wa >> s) == (s >= 128 ? u128{0} : a >> s));
        const std::uint64_t d = rng() | 1u;
        w128 q = wa;
        const std::uint64_t rem = q.div_word(d);
        REQUIRE(to128(q) == a / d);
        REQUIRE(rem == static_cast<std::uint64_t>(a % d));
        REQUIRE(wa.bit_width() == (a == 0 ? 0u : 128u - static_cast<std::size_t>(a >> 64 ? __builtin_clzll(static_cast<std::uint64_t>(a >> 64)) : 64 + __builtin_clzll(static_cast<std::uint64_t>(a)))));
    }
}

TEST_CASE("wide_uint carries and borrows across every word") {
    svq::wide_uint<1024> x = svq::wide_uint<1024>::max();
    svq::wide_uint<1024> one(1u);
    REQUIRE(x.add_with_carry(one));  // wraps to zero with a carry out
    REQUIRE(x.is_zero());
    REQUIRE(x.sub_with_borrow(one));  // wraps back to max with a borrow
    REQUIRE(x == svq::wide_uint<1024>::max());
    REQUIRE(x.bit_width() == 1024);
    svq::wide_uint<1024> p(1u);
    p <<= 1000;
    REQUIRE(p.bit_width() == 1001);
    REQUIRE(p.bit(1000));
    REQUIRE_FALSE(p.bit(999));
    svq::wide_uint<1024> q = p;
    --q;  // 2^1000 - 1: 1000 ones
    REQUIRE(q.bit_width() == 1000);
    for (std::size_t i = 0; i < 1000; ++i) REQUIRE(q.bit(i));
}

TEST_CASE("wide_uint decimal text round trips and matches known powers") {
    svq::wide_uint<256> two_128(1u);
    two_128 <<= 128;
    REQUIRE(two_128.to_string() == "340282366920938463463374607431768211456");
    REQUIRE(fmt::format("{}", two_128) == "340282366920938463463374607431768211456");
    REQUIRE(svq::wide_uint<256>::from_string("340282366920938463463374607431768211456") == two_128);
    REQUIRE(svq::wide_uint<64>(0u).to_string() == "0");
    // 10^19 boundaries: the chunked printer must zero-pad inner chunks.
    REQUIRE(svq::wide_uint<128>::from_string("100000000000000000000000000000000000001").to_string() ==
            "100000000000000000000000000000000000001");
    std::mt19937_64 rng(7);
    for (int i = 0; i < 1000; ++i) {
        svq::wide_uint<512> v;
        for (auto& w : v.words()) w = rng();
        v >>= rng() % 512;
        REQUIRE(svq::wide_uint<512>::from_string(v.to_string()) == v);
    }
    REQUIRE_THROWS_AS(svq::wide_uint<64>::from_string("18446744073709551616"), svq::overflow_error);
    REQUIRE(svq::wide_uint<64>::from_string("18446744073709551615") == svq::wide_uint<64>::max());
    REQUIRE_THROWS_AS(svq::wide_uint<64>::from_string("12a"), svq::invalid_argument);
    REQUIRE_THROWS_WITH(svq::wide_uint<64>::from_string("12a"), Catch::Contains("'a'"));
    REQUIRE_THROWS_AS(svq::wide_uint<64>::from_string(""), svq::invalid_argument);
}

TEST_CASE("wide_uint bit fields deposit and extract") {
    std::mt19937_64 rng(99);
    for (int iter = 0; iter < 20000; ++iter) {
        svq::wide_uint<384> v;
        for (auto& w : v.words()) w = rng();
        const std::size_t first = rng() % 384;
        const std::size_t count = 1 + rng() % 64;
        const std::uint64_t value = rng() & (count == 64 ? ~0ull : ((1ull << count) - 1));
        const svq::wide_uint<384> before = v;
        v.deposit_bits(first, count, value);
        const std::size_t kept = std::min<std::size_t>(count, 384 - first);
        const std::uint64_t mask = kept == 64 ? ~0ull : ((1ull << kept) - 1);
        REQUIRE(v.extract_bits(first, count) == (value & mask));
        for (std::size_t b = 0; b < 384; ++b)
            if (b < first || b >= first + kept) REQUIRE(v.bit(b) == before.bit(b));
    }
}

TEST_CASE("wide_uint is usable in constant expressions") {
    constexpr svq::wide_uint<192> a = [] {
        svq::wide_uint<192> x(1u);
        x <<= 150;
        x += svq::wide_uint<192>(5u);
        return x;
    }();
    STATIC_REQUIRE(a.bit_width() == 151);
    STATIC_REQUIRE(a.extract_bits(0, 8) == 5);
    STATIC_REQUIRE(svq::index_bits_v<svq::wide_uint<192>> == 192);
    STATIC_REQUIRE(svq::index_bits_v<std::uint32_t> == 32);
}

// core/limbs.hpp: the one division routine (Knuth D over a normalised divisor)
// at run-time and at compile-time sizes, checked by multiplying back:
// q * d + r == num and r < d.
namespace {

template <std::size_t LN = 0, std::size_t LD = 0>
int division_failures(std::mt19937_64& rng, int count) {
    int bad = 0;
    for (int i = 0; i < count; ++i) {
        const std::size_t ln = LN != 0 ? LN : 1 + rng() % 8, ld = LD != 0 ? LD : 1 + rng() % ln;
        std::vector<std::uint64_t> num(ln), den(ld), q(ln), r(ld), prod(ln + 1), expect(ln + 1, 0), rr(ln + 1, 0);
        for (auto& v : num) v = rng() >> (rng() % 64);
        for (auto& v : den) v = rng() >> (rng() % 64);
        if (rng() % 4 == 0) den[ld - 1] = ~std::uint64_t{0};  // the qhat = b - 1 path
        if (den[ld - 1] == 0) den[ld - 1] = 1 + rng() % 5;    // ld words used
        if constexpr (LN != 0) {  // the hot path's form: divisor normalised by the caller
            const int s = std::countl_zero(den[ld - 1]);
            std::array<std::uint64_t, LD> vn{};
            for (std::size_t t = LD; t-- > 0;) vn[t] = (den[t] << s) | (s != 0 && t > 0 ? den[t - 1] >> (64 - s) : 0);
            svq::detail::divmod_normalized<LN, LD>(num.data(), LN, vn.data(), LD, s,
                                                   svq::detail::reciprocal_word(vn[LD - 1]), q.data(), r.data());
        } else {
            svq::detail::limbs_divmod(num.data(), ln, den.data(), ld, q.data(), ln, r.data());
        }
        svq::detail::limbs_mul(q.data(), ln, den.data(), ld, prod.data(), ln + 1);
        std::copy(r.begin(), r.end(), rr.begin());
        svq::detail::limbs_add(prod.data(), rr.data(), ln + 1);
        std::copy(num.begin(), num.end(), expect.begin());
        bad += prod != expect || !svq::detail::limbs_less(r.data(), den.data(), ld);
    }
    return bad;
}

}  // namespace

TEST_CASE("limb division: q * d + r == num and r < d, run-time and fixed sizes") {
    std::mt19937_64 rng(42);
    REQUIRE(division_failures(rng, 20000) == 0);
    REQUIRE(division_failures<2, 1>(rng, 20000) == 0);
    REQUIRE(division_failures<2, 2>(rng, 20000) == 0);
    REQUIRE(division_failures<3, 2>(rng, 20000) == 0);
    REQUIRE(division_failures<5, 1>(rng, 20000) == 0);
    REQUIRE(division_failures<6, 3>(rng, 20000) == 0);
    REQUIRE(division_failures<7, 6>(rng, 20000) == 0);
    REQUIRE(division_failures<8, 8>(rng, 20000) == 0);
    REQUIRE(division_failures<16, 9>(rng, 5000) == 0);
}

TEST_CASE("two-by-one division with a precomputed reciprocal == 128-bit division") {
    std::mt19937_64 rng(3);
    const auto check = [](std::uint64_t u1, std::uint64_t u0, std::uint64_t d) {
        const svq::detail::uint128 n = (static_cast<svq::detail::uint128>(u1) << 64) | u0;
        std::uint64_t rem = 0;
        const std::uint64_t q = svq::detail::div_2by1_preinv(u1, u0, d, svq::detail::reciprocal_word(d), rem);
        return q == static_cast<std::uint64_t>(n / d) && rem == static_cast<std::uint64_t>(n % d);
    };
    for (const std::uint64_t d : {std::uint64_t{1} << 63, ~std::uint64_t{0}, (std::uint64_t{1} << 63) + 1}) {
        for (const std::uint64_t u1 : {std::uint64_t{0}, d - 1, d / 2})
            for (const std::uint64_t u0 : {std::uint64_t{0}, ~std::uint64_t{0}, std::uint64_t{12345}})
                REQUIRE(check(u1, u0, d));
    }
    int bad = 0;
    for (int i = 0; i < 100000; ++i) {
        const std::uint64_t d = rng() | (std::uint64_t{1} << 63);
        bad += !check(rng() % d, rng(), d);
    }
    REQUIRE(bad == 0);
}
