// Shape-gain PVQ codec: a vector x of N floats -> (index of its pyramid
// point y in [0, V(N, K)), gain g) and back to g * y / ||y||.
//
// pvq_codec<L, S> composes any Lattice L (the index) with any ShapeQuantizer
// S (the point, by default the search); the library's lattice is the split
// order of the matrix format, and pvq_vector_codec<Index> names the codec over
// it (format/split_lattice.hpp; docs/pvq.md, "Shape-gain codec").
//
// The gain is the MSE-optimal g = x . u with u = y / ||y||, stored >= 0 (when
// x . y < 0 the codec stores -y, a point of the same pyramid, and -g: the
// same reconstruction): then ||x - g u||^2 = ||x||^2 - g^2, and a quantized
// gain adds exactly (g - g_hat)^2 (docs/pvq.md, "Shape-gain"). Here the gain
// stays a float; the matrix codec quantizes it (svq/scale/).
//
// encode_many / decode_many: batches over any Codec.
#pragma once

#include <svq/concepts.hpp>
#include <svq/error.hpp>
#include <svq/pvq/count.hpp>
#include <svq/pvq/pulses.hpp>
#include <svq/pvq/search.hpp>
#include <svq/pvq/shape_quantizer.hpp>

#include <fmt/format.h>

#include <cmath>
#include <concepts>
#include <cstddef>
#include <span>
#include <utility>
#include <vector>

namespace svq {

// One coded vector: the index of its point and its gain (>= 0). It depends
// only on the index type, so codecs that differ in their shape quantizer share
// their codes.
template <IndexType Index>
struct pvq_code {
    Index index{};
    float gain = 0.0f;
    friend bool operator==(const pvq_code&, const pvq_code&) = default;
};

template <Lattice L, ShapeQuantizer S = pvq_shape_quantizer>
class pvq_codec {
public:
    using lattice_type = L;
    using quantizer_type = S;
    using index_type = typename L::index_type;
    using code_type = pvq_code<index_type>;

    // A lattice and a shape quantizer of the same (N, K); throws
    // svq::invalid_argument naming both when they differ.
    pvq_codec(L lattice, S quantizer) : lattice_(std::move(lattice)), quantizer_(std::move(quantizer)) {
        if (lattice_.dim() != quantizer_.dim() || lattice_.pulses() != quantizer_.pulses())
            throw invalid_argument(fmt::format(
                "pvq_codec: the lattice is P(N={}, K={}) but the shape quantizer maps to P(N={}, K={})",
                static_cast<std::size_t>(lattice_.dim()), static_cast<std::size_t>(lattice_.pulses()),
                static_cast<std::size_t>(quantizer_.dim()), static_cast<std::size_t>(quantizer_.pulses())));
    }
    // Both built from (N, K) (and the search options, for a quantizer that
    // takes them). Throws what their constructors throw (for the library's
    // lattice: svq::invalid_argument for zero sizes, svq::overflow_error when
    // the index does not fit its type).
    pvq_codec(std::size_t dim, std::size_t pulses)
        requires std::constructible_from<L, std::size_t, std::size_t> &&
                 std::constructible_from<S, std::size_t, std::size_t>
        : pvq_codec(L(dim, pulses), S(dim, pulses)) {}
    pvq_codec(std::size_t dim, std::size_t pulses, search_options options)
        requires std::constructible_from<L, std::size_t, std::size_t> &&
                 std::constructible_from<S, std::size_t, std::size_t, search_options>
        : pvq_codec(L(dim, pulses), S(dim, pulses, options)) {}

    std::size_t dim() const noexcept { return lattice_.dim(); }
    std::size_t pulses() const noexcept { return lattice_.pulses(); }
    // Stored bits of the shape (the index); the gain is the caller's business here.
    std::size_t index_bits() const noexcept { return lattice_.index_bits(); }
    const L& lattice() const noexcept { return lattice_; }
    const S& quantizer() const noexcept { return quantizer_; }

    // x: dim floats, finite. A zero vector codes as gain 0 with the point the
    // quantizer gives it (the search: (K, 0, ..., 0)), so it decodes to zeros.
    // Throws svq::invalid_argument for a wrong size, a non-finite entry (the
    // search's check) or a quantizer output that is not a point of P(N, K)
    // (the lattice's check).
    code_type encode(std::span<const float> x) const {
        std::vector<int> y(dim());
        return encode(x, y);
    }
    // Same, with the caller's pulse buffer (y: dim ints, receives the stored point).
    code_type encode(std::span<const float> x, std::span<int> y) const {
        check_size("encode", x.size());
        check_size("encode (point buffer)", y.size());
        quantizer_.quantize(x, y);
        double gain = detail::optimal_gain(x.data(), y.data(), dim());
        if (gain < 0.0) {
            for (int& v : y) v = -v;
            gain = -gain;
        }
        index_type index = lattice_.rank(y);
        return {std::move(index), static_cast<float>(gain)};
    }

    // out: dim floats. Throws svq::corrupt_data for an index >= V(N, K) (the
    // lattice's check) and svq::invalid_argument for a non-finite or negative
    // gain or a wrong size.
    void decode(const code_type& code, std::span<float> out) const {
        std::vector<int> y(dim());
        decode(code, out, y);
    }
    // Same, with the caller's pulse buffer (y: dim ints, receives the point).
    void decode(const code_type& code, std::span<float> out, std::span<int> y) const {
        check_size("decode", out.size());
        if (!std::isfinite(code.gain) || code.gain < 0.0f)
            throw invalid_argument(fmt::format("pvq_codec::decode: gain {} must be finite and >= 0", code.gain));
        lattice_.unrank(code.index, y);
        decode_point(y, code.gain, out);
    }

    // g * y / ||y|| into out (dim floats) for a valid point y (dim ints).
    void decode_point(std::span<const int> y, float gain, std::span<float> out) const noexcept {
        const auto yy = detail::pulse_energy(y.data(), dim());
        const auto scale = static_cast<float>(gain / std::sqrt(static_cast<double>(yy)));
        detail::scale_pulses(y.data(), scale, out.data(), dim());
    }

private:
    void check_size(const char* what, std::size_t size) const {
        if (size != dim())
            throw invalid_argument(fmt::format("pvq_codec::{}: vector has {} entries, N = {}", what, size, dim()));
    }

    L lattice_;
    S quantizer_;
};

// Batches over any Codec. x: codes.size() * dim floats, vector after vector;
// codes[i] = codec.encode(x[i dim, (i + 1) dim)). Throws
// svq::invalid_argument (with both sizes) when the sizes disagree, and what
// encode throws.
template <Codec C>
void encode_many(const C& codec, std::span<const float> x, std::span<typename C::code_type> codes) {
    const std::size_t n = codec.dim();
    if (x.size() != codes.size() * n)
        throw invalid_argument(
            fmt::format("encode_many: {} floats for {} codes of dim {}", x.size(), codes.size(), n));
    for (std::size_t i = 0; i < codes.size(); ++i) codes[i] = codec.encode(x.subspan(i * n, n));
}

// out: codes.size() * dim floats, vector i at [i dim, (i + 1) dim). Throws
// svq::invalid_argument (with both sizes) when the sizes disagree, and what
// decode throws.
template <Codec C>
void decode_many(const C& codec, std::span<const typename C::code_type> codes, std::span<float> out) {
    const std::size_t n = codec.dim();
    if (out.size() != codes.size() * n)
        throw invalid_argument(
            fmt::format("decode_many: {} floats for {} codes of dim {}", out.size(), codes.size(), n));
    for (std::size_t i = 0; i < codes.size(); ++i) codec.decode(codes[i], out.subspan(i * n, n));
}

}  // namespace svq
