#include "catch.hpp"

#include "oracle/coordinate_lattice.hpp"

#include <svq/concepts.hpp>
#include <svq/format/split_lattice.hpp>
#include <svq/pvq/codec.hpp>
#include <svq/pvq/shape_quantizer.hpp>
#include <svq/scale/scalar_quantizer.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace {
struct no_rank_lattice {  // has everything a Lattice needs except rank
    using index_type = std::uint64_t;
    std::size_t dim() const { return 1; }
    std::size_t pulses() const { return 1; }
    std::uint64_t size() const { return 1; }
    std::size_t index_bits() const { return 0; }
    void unrank(const std::uint64_t&, std::span<int>) const {}
};
struct float_index_lattice {  // index type is not an index type
    using index_type = double;
    std::size_t dim() const { return 1; }
    std::size_t pulses() const { return 1; }
    double size() const { return 1; }
    std::size_t index_bits() const { return 0; }
    double rank(std::span<const int>) const { return 0; }
    void unrank(const double&, std::span<int>) const {}
};
struct no_pulses_lattice {  // a point set with an index, but no pulse count K
    using index_type = std::uint64_t;
    std::size_t dim() const { return 1; }
    std::uint64_t size() const { return 1; }
    std::size_t index_bits() const { return 0; }
    std::uint64_t rank(std::span<const int>) const { return 0; }
    void unrank(const std::uint64_t&, std::span<int>) const {}
};
struct no_quantize_shape {  // dim and pulses, but no quantize
    std::size_t dim() const { return 1; }
    std::size_t pulses() const { return 1; }
};
struct encode_only_codec {
    struct code_type {};
    std::size_t dim() const { return 1; }
    code_type encode(std::span<const float>) const { return {}; }
};
struct wrong_encode_codec {
    struct code_type {};
    std::size_t dim() const { return 1; }
    int encode(std::span<const float>) const { return 0; }
    void decode(const code_type&, std::span<float>) const {}
};
// A user-defined Codec, outside svq: each float rounded to the nearest integer.
struct rounding_codec {
    using code_type = std::array<long, 2>;
    std::size_t dim() const { return 2; }
    code_type encode(std::span<const float> x) const { return {std::lround(x[0]), std::lround(x[1])}; }
    void decode(const code_type& c, std::span<float> out) const {
        out[0] = static_cast<float>(c[0]);
        out[1] = static_cast<float>(c[1]);
    }
};
struct no_bits_scale {
    std::uint32_t encode(double) const { return 0; }
    double decode(std::uint32_t) const { return 0; }
};

// Whether pvq_codec<L, S> is a valid type (its constrained parameters accept
// L and S), and whether the batch helpers accept C.
template <class L, class S = svq::pvq_shape_quantizer>
concept codec_accepts = requires { typename svq::pvq_codec<L, S>; };
template <class C>
concept batch_accepts = requires(const C& c, std::span<const float> x, std::span<float> out) {
    svq::encode_many(c, x, std::span<typename C::code_type>{});
    svq::decode_many(c, std::span<const typename C::code_type>{}, out);
};

using coordinate_lattice = svq::oracle::pvq_coordinate_lattice<svq::wide_uint<128>>;
}  // namespace

TEST_CASE("svq types satisfy their concepts") {
    STATIC_REQUIRE(svq::Lattice<svq::split_lattice<std::uint32_t>>);
    STATIC_REQUIRE(svq::Lattice<svq::split_lattice<svq::wide_uint<1024>>>);
    STATIC_REQUIRE(svq::Lattice<coordinate_lattice>);  // the tests' oracle, a user-defined lattice
    STATIC_REQUIRE(svq::Codec<svq::pvq_vector_codec<svq::wide_uint<128>>>);
    STATIC_REQUIRE(svq::Codec<svq::pvq_vector_codec<std::uint64_t>>);
    STATIC_REQUIRE(svq::Codec<svq::pvq_codec<coordinate_lattice>>);
    STATIC_REQUIRE(svq::Codec<rounding_codec>);
    STATIC_REQUIRE(svq::ShapeQuantizer<svq::pvq_shape_quantizer>);
    STATIC_REQUIRE(svq::ScaleQuantizer<svq::scalar_quantizer>);
    STATIC_REQUIRE(svq::IndexType<std::uint8_t>);
    STATIC_REQUIRE(svq::IndexType<svq::wide_uint<64>>);
}

TEST_CASE("types that must not satisfy the concepts") {
    STATIC_REQUIRE_FALSE(svq::Lattice<no_rank_lattice>);
    STATIC_REQUIRE_FALSE(svq::Lattice<float_index_lattice>);
    STATIC_REQUIRE_FALSE(svq::Lattice<no_pulses_lattice>);
    STATIC_REQUIRE_FALSE(svq::Lattice<svq::pvq_vector_codec<std::uint64_t>>);  // a codec is not a lattice
    STATIC_REQUIRE_FALSE(svq::Codec<encode_only_codec>);
    STATIC_REQUIRE_FALSE(svq::Codec<wrong_encode_codec>);
    STATIC_REQUIRE_FALSE(svq::Codec<svq::split_lattice<std::uint64_t>>);
    STATIC_REQUIRE_FALSE(svq::ShapeQuantizer<svq::split_lattice<std::uint64_t>>);
    STATIC_REQUIRE_FALSE(svq::ShapeQuantizer<no_quantize_shape>);
    STATIC_REQUIRE_FALSE(svq::ScaleQuantizer<no_bits_scale>);
    STATIC_REQUIRE_FALSE(svq::ScaleQuantizer<int>);
    STATIC_REQUIRE_FALSE(svq::IndexType<bool>);
    STATIC_REQUIRE_FALSE(svq::IndexType<int>);
    STATIC_REQUIRE_FALSE(svq::IndexType<double>);
}

TEST_CASE("the shape quantizer is the search with fixed (N, K)") {
    const svq::pvq_shape_quantizer q(5, 7);
    const std::vector<float> x = {0.5f, -2.0f, 0.1f, 1.0f, 0.0f};
    std::vector<int> a(5), b(5);
    q.quantize(x, a);
    svq::pvq_search(x, 7, b);
    REQUIRE(a == b);
    REQUIRE_THROWS_AS(q.quantize(std::vector<float>(4), a), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::pvq_shape_quantizer(0, 3), svq::invalid_argument);
}

TEST_CASE("pvq_codec and the batch helpers accept exactly what their concepts accept") {
    STATIC_REQUIRE(codec_accepts<svq::split_lattice<std::uint64_t>>);
    STATIC_REQUIRE(codec_accepts<coordinate_lattice>);
    STATIC_REQUIRE_FALSE(codec_accepts<no_rank_lattice>);
    STATIC_REQUIRE_FALSE(codec_accepts<float_index_lattice>);
    STATIC_REQUIRE_FALSE(codec_accepts<no_pulses_lattice>);
    STATIC_REQUIRE_FALSE(codec_accepts<svq::split_lattice<std::uint64_t>, no_quantize_shape>);
    STATIC_REQUIRE_FALSE(codec_accepts<svq::split_lattice<std::uint64_t>, svq::split_lattice<std::uint64_t>>);
    STATIC_REQUIRE(batch_accepts<svq::pvq_vector_codec<std::uint64_t>>);
    STATIC_REQUIRE(batch_accepts<rounding_codec>);
    STATIC_REQUIRE_FALSE(batch_accepts<wrong_encode_codec>);
}

TEST_CASE("a user-defined lattice plugs into pvq_codec: the oracle's coordinate order") {
    // Same search, another index order: the same point and gain, a different
    // index that unranks (in its own order) to that point, the same decode.
    std::mt19937_64 rng(31);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const svq::pvq_codec<coordinate_lattice> user(32, 50);
    const svq::pvq_vector_codec<svq::wide_uint<128>> library(32, 50);
    REQUIRE(user.index_bits() == library.index_bits());
    std::vector<float> x(32), a(32), b(32);
    std::vector<int> ya(32), yb(32), back(32);
    int different_indices = 0;
    for (int iter = 0; iter < 200; ++iter) {
        for (auto& v : x) v = normal(rng);
        const auto ca = user.encode(x, ya);
        const auto cb = library.encode(x, yb);
        REQUIRE(ya == yb);
        REQUIRE(ca.gain == cb.gain);
        REQUIRE(ca.index == user.lattice().rank(ya));
        user.lattice().unrank(ca.index, back);
        REQUIRE(back == ya);
        different_indices += ca.index != cb.index;
        user.decode(ca, a);
        library.decode(cb, b);
        REQUIRE(a == b);
    }
    REQUIRE(different_indices > 150);  // two orders, rarely the same integer for a point
}

TEST_CASE("the batch helpers take a user-defined Codec") {
    const rounding_codec codec;
    const std::vector<float> x = {0.4f, 1.6f, -2.2f, 7.5f, 3.0f, -0.6f};
    std::vector<rounding_codec::code_type> codes(3);
    svq::encode_many(codec, x, codes);
    REQUIRE(codes == std::vector<rounding_codec::code_type>{{0, 2}, {-2, 8}, {3, -1}});
    std::vector<float> out(6);
    svq::decode_many(codec, codes, out);
    REQUIRE(out == std::vector<float>{0.0f, 2.0f, -2.0f, 8.0f, 3.0f, -1.0f});
    std::vector<float> odd(5);
    REQUIRE_THROWS_AS(svq::decode_many(codec, codes, odd), svq::invalid_argument);
    REQUIRE_THROWS_WITH(svq::decode_many(codec, codes, odd), Catch::Contains("5 floats for 3 codes of dim 2"));
}
