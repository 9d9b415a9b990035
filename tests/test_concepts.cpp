#include "catch.hpp"

#include <svq/concepts.hpp>
#include <svq/pvq/codec.hpp>
#include <svq/pvq/lattice.hpp>
#include <svq/pvq/shape_quantizer.hpp>
#include <svq/scale/scalar_quantizer.hpp>

#include <cstdint>
#include <span>
#include <vector>

namespace {
struct no_rank_lattice {  // has everything a Lattice needs except rank
    using index_type = std::uint64_t;
    std::size_t dim() const { return 1; }
    std::uint64_t size() const { return 1; }
    std::size_t index_bits() const { return 0; }
    void unrank(const std::uint64_t&, std::span<int>) const {}
};
struct float_index_lattice {  // index type is not an index type
    using index_type = double;
    std::size_t dim() const { return 1; }
    double size() const { return 1; }
    std::size_t index_bits() const { return 0; }
    double rank(std::span<const int>) const { return 0; }
    void unrank(const double&, std::span<int>) const {}
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
struct no_bits_scale {
    std::uint32_t encode(double) const { return 0; }
    double decode(std::uint32_t) const { return 0; }
};
}  // namespace

TEST_CASE("svq types satisfy their concepts") {
    STATIC_REQUIRE(svq::Lattice<svq::pvq_lattice<std::uint32_t>>);
    STATIC_REQUIRE(svq::Lattice<svq::pvq_lattice<svq::wide_uint<1024>>>);
    STATIC_REQUIRE(svq::Codec<svq::pvq_codec<svq::wide_uint<128>>>);
    STATIC_REQUIRE(svq::Codec<svq::pvq_codec<std::uint64_t>>);
    STATIC_REQUIRE(svq::ShapeQuantizer<svq::pvq_shape_quantizer>);
    STATIC_REQUIRE(svq::ScaleQuantizer<svq::scalar_quantizer>);
    STATIC_REQUIRE(svq::IndexType<std::uint8_t>);
    STATIC_REQUIRE(svq::IndexType<svq::wide_uint<64>>);
}

TEST_CASE("types that must not satisfy the concepts") {
    STATIC_REQUIRE_FALSE(svq::Lattice<no_rank_lattice>);
    STATIC_REQUIRE_FALSE(svq::Lattice<float_index_lattice>);
    STATIC_REQUIRE_FALSE(svq::Lattice<svq::pvq_codec<std::uint64_t>>);  // a codec is not a lattice
    STATIC_REQUIRE_FALSE(svq::Codec<encode_only_codec>);
    STATIC_REQUIRE_FALSE(svq::Codec<wrong_encode_codec>);
    STATIC_REQUIRE_FALSE(svq::Codec<svq::pvq_lattice<std::uint64_t>>);
    STATIC_REQUIRE_FALSE(svq::ShapeQuantizer<svq::pvq_lattice<std::uint64_t>>);
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
