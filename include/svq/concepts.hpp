// The concepts svq's pieces compose through, built from small detail::
// requirements. They constrain the templates that compose them: pvq_codec
// (pvq/codec.hpp) takes any Lattice and ShapeQuantizer, encode_many and
// decode_many take any Codec. tests/test_concepts.cpp checks types that
// satisfy them and types that must not.
#pragma once

#include <svq/core/wide_uint.hpp>  // IndexType

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

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

// A family of gain quantizers, one per group shape: make(dim, cols, bits)
// gives the ScaleQuantizer of the gains (normalised by the row scale) of a
// group of `dim` weights in a row of `cols`, with 2^bits levels. The matrix
// format's default is beta_gain_quantizers (format/row_format.hpp).
template <class F>
concept GainQuantizers = std::copy_constructible<F> && requires(const F& f, std::size_t dim, std::size_t cols,
                                                                  unsigned bits) {
    { f.make(dim, cols, bits) } -> ScaleQuantizer;
};

// The code of the points of one group: a pyramid P(dim, pulses) with a
// bijective index held in limbs() little-endian 64-bit words, an index of
// index_bits() bits. rank(y, index), unrank(index, y) (index < size,
// unchecked), in_range(index). The matrix format's default is
// pvq_split_index (format/split_index.hpp).
template <class S>
concept ShapeCode = std::constructible_from<S, std::size_t, std::size_t> &&
                    requires(const S& s, const int* y, int* out, std::uint64_t* index, const std::uint64_t* cindex) {
                        { s.dim() } -> std::convertible_to<std::size_t>;
                        { s.pulses() } -> std::convertible_to<std::size_t>;
                        { s.index_bits() } -> std::convertible_to<std::size_t>;
                        { s.limbs() } -> std::convertible_to<std::size_t>;
                        s.rank(y, index);
                        s.unrank(cindex, out);
                        { s.in_range(cindex) } -> std::same_as<bool>;
                    };

// A weight matrix in a quantized form: its shape, the bits it stores, its
// reconstruction (row-major rows * cols floats) and products with it
// (y = Wq x; batched: `batch` vectors at once).
template <class M>
concept QuantizedMatrix = requires(const M& m, std::span<float> out, std::span<const float> x, std::span<float> y,
                                   std::size_t batch) {
    { m.rows() } -> std::convertible_to<std::size_t>;
    { m.cols() } -> std::convertible_to<std::size_t>;
    { m.stored_bits() } -> std::convertible_to<std::size_t>;
    { m.bits_per_weight() } -> std::convertible_to<double>;
    { m.dequantize() } -> std::same_as<std::vector<float>>;
    m.dequantize(out);
    m.gemv(x, y);
    m.gemv_batch(x, y, batch);
};

struct matrix_config;

// How a matrix codec chooses its stored rows: encode(format, w, config)
// returns the payload words of w (rows x cols of the format's layout,
// row-major, finite) written through the format's row writer, searched in
// the basis config names (rotated or not) with its search options. Plain MSE
// (mse_search, matrix/quantized_matrix.hpp) and Hessian-weighted
// (hessian_search, hessian/gptq.hpp) searches satisfy it.
template <class S, class Format>
concept MatrixSearch = requires(const S& s, const Format& format, std::span<const float> w,
                                const matrix_config& config) {
    { s.encode(format, w, config) } -> std::same_as<std::vector<std::uint64_t>>;
};

// Vector codec: encode(x) -> code_type, decode(code, out).
template <class C>
concept Codec = detail::HasDim<C> && requires { typename C::code_type; } &&
                requires(const C& c, std::span<const float> x, std::span<float> out, const typename C::code_type& code) {
                    { c.encode(x) } -> std::same_as<typename C::code_type>;
                    c.decode(code, out);
                };

}  // namespace svq
