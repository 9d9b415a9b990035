// The concepts svq's pieces compose through, built from small detail::
// requirements. They constrain the templates that compose them: pvq_codec
// (pvq/codec.hpp) takes any Lattice and ShapeQuantizer, encode_many and
// decode_many take any Codec. tests/test_concepts.cpp checks types that
// satisfy them and types that must not.
#pragma once

#include <svq/pvq/count.hpp>  // IndexType

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

namespace svq {

namespace detail {
template <class T>
concept HasDim = requires(const T& t) {
    { t.dim() } -> std::convertible_to<std::size_t>;
};
template <class T>
concept HasPulses = requires(const T& t) {
    { t.pulses() } -> std::convertible_to<std::size_t>;
};
template <class T>
concept HasIndexType = requires { typename T::index_type; } && IndexType<typename T::index_type>;
}  // namespace detail

// The pyramid P(N, K) (dim() = N, pulses() = K) with a bijective index:
// size() (the point count V(N, K)), index_bits(), rank(point) -> index and
// unrank(index, point).
template <class L>
concept Lattice = detail::HasDim<L> && detail::HasPulses<L> && detail::HasIndexType<L> &&
                  requires(const L& l, std::span<const int> point, std::span<int> out,
                           const typename L::index_type& index) {
                      { l.size() } -> std::convertible_to<typename L::index_type>;
                      { l.index_bits() } -> std::convertible_to<std::size_t>;
                      { l.rank(point) } -> std::same_as<typename L::index_type>;
                      l.unrank(index, out);
                  };

// Maps a real vector of dim() entries to a point of P(dim(), pulses()):
// quantize(x, point).
template <class Q>
concept ShapeQuantizer = detail::HasDim<Q> && detail::HasPulses<Q> &&
                         requires(const Q& q, std::span<const float> x, std::span<int> point) {
                             q.quantize(x, point);
                         };

// A quantizer of one non-negative real (a gain or a scale) on 2^bits levels.
template <class S>
concept ScaleQuantizer = requires(const S& s, double value, std::uint32_t code) {
    { s.bits() } -> std::convertible_to<unsigned>;
    { s.encode(value) } -> std::convertible_to<std::uint32_t>;
    { s.decode(code) } -> std::convertible_to<double>;
};

// Vector codec: encode(x) -> code_type, decode(code, out).
template <class C>
concept Codec = detail::HasDim<C> && requires { typename C::code_type; } &&
                requires(const C& c, std::span<const float> x, std::span<float> out, const typename C::code_type& code) {
                    { c.encode(x) } -> std::same_as<typename C::code_type>;
                    c.decode(code, out);
                };

}  // namespace svq
