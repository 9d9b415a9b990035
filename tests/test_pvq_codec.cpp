#include "catch.hpp"

#include <svq/pvq/codec.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
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
}  // namespace

TEST_CASE("codec round trip: decode(encode(x)) is g * y / ||y|| with the searched point") {
    std::mt19937_64 rng(11);
    const svq::pvq_codec<svq::wide_uint<128>> codec(32, 50);
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
    const svq::pvq_codec<svq::wide_uint<128>> codec(32, 50);
    const std::size_t groups = 4000;
    const auto x = gaussian(32 * groups, rng);
    std::vector<svq::pvq_codec<svq::wide_uint<128>>::code_type> codes(groups);
    codec.encode_many(x, codes);
    std::vector<float> xhat(x.size());
    codec.decode_many(codes, xhat);
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
    const svq::pvq_codec<std::uint64_t> codec(8, 16);
    const std::vector<float> zero(8, 0.0f);
    const auto code = codec.encode(zero);
    REQUIRE(code.gain == 0.0f);
    std::vector<float> out(8, 1.0f);
    codec.decode(code, out);
    for (float v : out) REQUIRE(v == 0.0f);
}

TEST_CASE("codec errors name the bad value") {
    const svq::pvq_codec<std::uint64_t> codec(8, 16);
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
    REQUIRE_THROWS_AS((svq::pvq_codec<std::uint64_t>(32, 50)), svq::overflow_error);
}
