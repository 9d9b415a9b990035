#include "catch.hpp"

#include <svq/format/split_lattice.hpp>
#include <svq/pvq/codec.hpp>
#include <svq/pvq/shape_quantizer.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <vector>

namespace {
std::vector<float> gaussian(std::size_t n, std::mt19937_64& rng) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}
double sqnr_db(const std::vector<float>& x, const std::vector<float>& xhat) {
    double s = 0, e = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        s += double(x[i]) * x[i];
        e += (double(x[i]) - xhat[i]) * (double(x[i]) - xhat[i]);
    }
    return 10.0 * std::log10(s / e);
}

// The search, then every pulse's sign flipped: the same directions up to sign,
// so the codec must store the flipped point back with a gain >= 0.
struct negated_search {
    svq::pvq_shape_quantizer search;
    negated_search(std::size_t n, std::size_t k) : search(n, k) {}
    std::size_t dim() const { return search.dim(); }
    std::size_t pulses() const { return search.pulses(); }
    void quantize(std::span<const float> x, std::span<int> y) const {
        search.quantize(x, y);
        for (int& v : y) v = -v;
    }
};

// Returns a point with one pulse too many: not a point of P(N, K).
struct broken_quantizer {
    std::size_t dim() const { return 4; }
    std::size_t pulses() const { return 3; }
    void quantize(std::span<const float>, std::span<int> y) const {
        for (int& v : y) v = 1;
    }
};
}  // namespace

TEST_CASE("codec round trip: decode(encode(x)) is g * y / ||y|| with the searched point") {
    std::mt19937_64 rng(11);
    const svq::pvq_vector_codec<svq::wide_uint<128>> codec(32, 50);
    REQUIRE(codec.index_bits() == 96);
    std::vector<int> y(32), back(32);
    std::vector<float> out(32);
    for (int iter = 0; iter < 2000; ++iter) {
        const auto x = gaussian(32, rng);
        const auto code = codec.encode(x, y);
        REQUIRE(code.gain >= 0.0f);
        codec.lattice().unrank(code.index, back);
        REQUIRE(back == y);
        codec.decode(code, out);
        // Reconstruction error equals ||x||^2 - g^2 (the residual is orthogonal to u).
        double xx = 0, err = 0;
        for (std::size_t i = 0; i < 32; ++i) {
            xx += double(x[i]) * x[i];
            err += (double(x[i]) - out[i]) * (double(x[i]) - out[i]);
        }
        REQUIRE(err == Catch::Approx(xx - double(code.gain) * code.gain).margin(1e-4 * xx));
    }
}

TEST_CASE("codec SQNR on Gaussian data matches the design's prototype figure") {
    // docs/design.md ("A plain PVQ prototype"): a plain PVQ prototype reached 16.7 dB at N = 32 and 2.99 shape bits (K = 50),
    // with an unquantized gain. Our search must do at least as well.
    std::mt19937_64 rng(2);
    const svq::pvq_vector_codec<svq::wide_uint<128>> codec(32, 50);
    const std::size_t groups = 4000;
    const auto x = gaussian(32 * groups, rng);
    std::vector<svq::pvq_vector_codec<svq::wide_uint<128>>::code_type> codes(groups);
    svq::encode_many(codec, x, codes);
    std::vector<float> xhat(x.size());
    svq::decode_many(codec, codes, xhat);
    const double db = sqnr_db(x, xhat);
    INFO("SQNR " << db << " dB at " << double(codec.index_bits()) / 32 << " shape bits/weight");
    REQUIRE(db > 16.7);
    REQUIRE(db < 6.02 * 3.0);  // and below the Gaussian rate-distortion bound at 3 bits
}

TEST_CASE("SIMD and scalar decode bodies are bit-identical") {
    std::mt19937_64 rng(3);
    for (std::size_t n : {1u, 3u, 7u, 8u, 15u, 16u, 17u, 31u, 32u, 64u, 100u, 256u}) {
        std::vector<int> y(n);
        for (auto& v : y) v = static_cast<int>(rng() % 41) - 20;
        const float scale = 0.0137f * static_cast<float>(1 + rng() % 100);
        std::vector<float> a(n), b(n);
        svq::detail::scale_pulses_scalar(y.data(), scale, a.data(), n);
        svq::detail::scale_pulses(y.data(), scale, b.data(), n);
        for (std::size_t i = 0; i < n; ++i) REQUIRE(std::bit_cast<std::uint32_t>(a[i]) == std::bit_cast<std::uint32_t>(b[i]));
    }
}

TEST_CASE("zero vectors code as gain 0 and decode to zeros") {
    const svq::pvq_vector_codec<std::uint64_t> codec(8, 16);
    const std::vector<float> zero(8, 0.0f);
    const auto code = codec.encode(zero);
    REQUIRE(code.gain == 0.0f);
    std::vector<float> out(8, 1.0f);
    codec.decode(code, out);
    for (float v : out) REQUIRE(v == 0.0f);
}

TEST_CASE("codec errors name the bad value") {
    const svq::pvq_vector_codec<std::uint64_t> codec(8, 16);
    std::vector<float> x(8, 1.0f);
    x[5] = std::numeric_limits<float>::quiet_NaN();
    REQUIRE_THROWS_AS(codec.encode(x), svq::invalid_argument);
    REQUIRE_THROWS_WITH(codec.encode(x), Catch::Contains("x[5]"));
    x[5] = std::numeric_limits<float>::infinity();
    REQUIRE_THROWS_AS(codec.encode(x), svq::invalid_argument);
    REQUIRE_THROWS_WITH(codec.encode(std::vector<float>(7, 1.0f)), Catch::Contains("7 entries"));
    std::vector<float> out(8);
    REQUIRE_THROWS_AS(codec.decode({codec.lattice().size(), 1.0f}, out), svq::corrupt_data);
    REQUIRE_THROWS_AS(codec.decode({0u, -1.0f}, out), svq::invalid_argument);
    REQUIRE_THROWS_AS(codec.decode({0u, std::numeric_limits<float>::quiet_NaN()}, out), svq::invalid_argument);
    REQUIRE_THROWS_AS((svq::pvq_vector_codec<std::uint64_t>(32, 50)), svq::overflow_error);
}

TEST_CASE("the codec composes a lattice with any shape quantizer; the stored gain is >= 0") {
    std::mt19937_64 rng(23);
    const svq::pvq_vector_codec<svq::wide_uint<128>> plain(32, 50);
    const svq::pvq_vector_codec<svq::wide_uint<128>, negated_search> negated(32, 50);
    std::vector<int> y(32), yn(32);
    std::vector<float> a(32), b(32);
    for (int iter = 0; iter < 500; ++iter) {
        const auto x = gaussian(32, rng);
        const auto c = plain.encode(x, y);
        const auto cn = negated.encode(x, yn);
        // -(-y) = y: the same stored point, index and gain, bit for bit.
        REQUIRE(yn == y);
        REQUIRE(cn == c);
        REQUIRE(cn.gain >= 0.0f);
        plain.decode(c, a);
        negated.decode(cn, b);
        REQUIRE(a == b);
    }
}

TEST_CASE("a lattice and a quantizer of different (N, K) are rejected; a bad point is caught by the lattice") {
    REQUIRE_THROWS_AS((svq::pvq_vector_codec<std::uint64_t>(svq::split_lattice<std::uint64_t>(8, 16),
                                                            svq::pvq_shape_quantizer(8, 15))),
                      svq::invalid_argument);
    REQUIRE_THROWS_WITH((svq::pvq_vector_codec<std::uint64_t>(svq::split_lattice<std::uint64_t>(8, 16),
                                                              svq::pvq_shape_quantizer(9, 16))),
                        Catch::Contains("P(N=8, K=16)") && Catch::Contains("P(N=9, K=16)"));
    const svq::pvq_vector_codec<std::uint64_t, broken_quantizer> codec(svq::split_lattice<std::uint64_t>(4, 3),
                                                                       broken_quantizer{});
    REQUIRE_THROWS_AS(codec.encode(std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}), svq::invalid_argument);
    REQUIRE_THROWS_WITH(codec.encode(std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}), Catch::Contains("sum |y_i| = 4"));
}

TEST_CASE("batch helpers: the same codes as one encode per vector, sizes checked") {
    std::mt19937_64 rng(29);
    const svq::pvq_vector_codec<std::uint64_t> codec(16, 27);
    const std::size_t groups = 64;
    const auto x = gaussian(16 * groups, rng);
    std::vector<svq::pvq_vector_codec<std::uint64_t>::code_type> codes(groups);
    svq::encode_many(codec, x, codes);
    std::vector<float> xhat(x.size()), one(16);
    svq::decode_many(codec, codes, xhat);
    for (std::size_t g = 0; g < groups; ++g) {
        const auto c = codec.encode(std::span<const float>(x).subspan(g * 16, 16));
        REQUIRE(codes[g] == c);
        codec.decode(c, one);
        for (std::size_t i = 0; i < 16; ++i) REQUIRE(xhat[g * 16 + i] == one[i]);
    }
    std::vector<svq::pvq_vector_codec<std::uint64_t>::code_type> short_codes(groups - 1);
    REQUIRE_THROWS_AS(svq::encode_many(codec, x, short_codes), svq::invalid_argument);
    REQUIRE_THROWS_WITH(svq::encode_many(codec, x, short_codes), Catch::Contains("1024 floats for 63 codes of dim 16"));
    std::vector<float> short_out(x.size() - 1);
    REQUIRE_THROWS_WITH(svq::decode_many(codec, codes, short_out), Catch::Contains("1023 floats for 64 codes"));
}
