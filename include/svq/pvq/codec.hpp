// Shape-gain PVQ codec: a vector x of N floats -> (index of its pyramid
// point y in [0, V(N, K)), gain g) and back to g * y / ||y||.
//
// The gain is the MSE-optimal g = x . u with u = y / ||y|| (so g >= 0, since
// the search gives y the signs of x): then ||x - g u||^2 = ||x||^2 - g^2, and
// a quantized gain adds exactly (g - g_hat)^2 (docs/pvq.md, "Shape-gain").
// Here the gain stays a float; the matrix codec quantizes it (svq/scale/).
#pragma once

#include <svq/error.hpp>
#include <svq/pvq/lattice.hpp>
#include <svq/pvq/pulses.hpp>
#include <svq/pvq/search.hpp>
#include <svq/simd/compat.hpp>

#include <fmt/format.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace svq {

template <IndexType Index>
class pvq_codec {
public:
    using index_type = Index;
    struct code_type {
        Index index{};
        float gain = 0.0f;
        friend bool operator==(const code_type&, const code_type&) = default;
    };

    // dim >= 1, pulses >= 1; throws like pvq_lattice (svq::overflow_error when
    // the index does not fit Index).
    pvq_codec(std::size_t dim, std::size_t pulses, search_options options = {})
        : lattice_(dim, pulses), options_(options) {}

    std::size_t dim() const noexcept { return lattice_.dim(); }
    std::size_t pulses() const noexcept { return lattice_.pulses(); }
    // Stored bits of the shape (the index); the gain is the caller's business here.
    std::size_t index_bits() const noexcept { return lattice_.index_bits(); }
    const pvq_lattice<Index>& lattice() const noexcept { return lattice_; }
    const search_options& options() const noexcept { return options_; }

    // x: dim floats, finite. A zero vector codes as gain 0 with the point
    // (K, 0, ..., 0) (pvq_search's documented result), so it decodes to zeros.
    // Throws svq::invalid_argument for a wrong size or a non-finite entry.
    code_type encode(std::span<const float> x) const {
        std::vector<int> y(dim());
        return encode(x, y);
    }
    // Same, with the caller's pulse buffer (y: dim ints, receives the point).
    code_type encode(std::span<const float> x, std::span<int> y) const {
        check_size("encode", x.size());
        pvq_search(x, static_cast<int>(pulses()), y, options_);
        return {lattice_.rank_unchecked(y), static_cast<float>(detail::optimal_gain(x.data(), y.data(), dim()))};
    }

    // out: dim floats. Throws svq::corrupt_data for an index >= V(N, K) and
    // svq::invalid_argument for a non-finite or negative gain or a wrong size.
    void decode(const code_type& code, std::span<float> out) const {
        std::vector<int> y(dim());
        decode(code, out, y);
    }
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

    // Batches. x: count * dim floats (row after row), codes: count entries.
    void encode_many(std::span<const float> x, std::span<code_type> codes) const {
        if (x.size() != codes.size() * dim())
            throw invalid_argument(fmt::format("pvq_codec::encode_many: {} floats for {} codes of dim {}", x.size(),
                                               codes.size(), dim()));
        std::vector<int> y(dim());
        for (std::size_t i = 0; i < codes.size(); ++i) codes[i] = encode(x.subspan(i * dim(), dim()), y);
    }
    // out: codes.size() * dim floats.
    void decode_many(std::span<const code_type> codes, std::span<float> out) const {
        if (out.size() != codes.size() * dim())
            throw invalid_argument(fmt::format("pvq_codec::decode_many: {} floats for {} codes of dim {}", out.size(),
                                               codes.size(), dim()));
        std::vector<int> y(dim());
        for (std::size_t i = 0; i < codes.size(); ++i) decode(codes[i], out.subspan(i * dim(), dim()), y);
    }

private:
    void check_size(const char* what, std::size_t size) const {
        if (size != dim())
            throw invalid_argument(fmt::format("pvq_codec::{}: vector has {} entries, N = {}", what, size, dim()));
    }

    pvq_lattice<Index> lattice_;
    search_options options_;
};

}  // namespace svq
