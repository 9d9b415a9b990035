// The library's Lattice: the pyramid P(N, K) with the split-order index of
// the packed matrix format (pvq_split_index, format/split_index.hpp;
// docs/performance.md, "Index order"), typed and checked, and the
// single-vector codec over it (docs/pvq.md, "Shape-gain codec").
//
//   split_lattice<Index>     rank / unrank of one point with an Index-typed
//                            index; satisfies svq::Lattice.
//   pvq_vector_codec<Index>  pvq_codec over split_lattice<Index>: one vector
//                            of N floats <-> (index, gain).
#pragma once

#include <svq/concepts.hpp>
#include <svq/core/wide_uint.hpp>
#include <svq/error.hpp>
#include <svq/format/split_index.hpp>
#include <svq/pvq/codec.hpp>
#include <svq/pvq/count.hpp>
#include <svq/pvq/shape_quantizer.hpp>

#include <fmt/format.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

namespace svq {

template <IndexType Index>
class split_lattice {
public:
    using index_type = Index;

    // dim >= 1, pulses >= 1. Throws svq::invalid_argument for zero sizes and
    // svq::overflow_error (naming N, K and the bits required) when V(N, K) does
    // not fit Index or needs more than 1024 bits.
    split_lattice(std::size_t dim, std::size_t pulses) : size_(pvq_count<Index>(dim, pulses)), index_(dim, pulses) {}

    std::size_t dim() const noexcept { return index_.dim(); }
    std::size_t pulses() const noexcept { return index_.pulses(); }
    // V(N, K): the number of points; every index is below it.
    const Index& size() const noexcept { return size_; }
    // Bits of a stored index: ceil(log2 V(N, K)).
    std::size_t index_bits() const noexcept { return index_.index_bits(); }
    // The table-driven coder underneath (limb-level rank, unrank and batches).
    const pvq_split_index& split_index() const noexcept { return index_; }

    // True when y is a point of P(N, K): dim entries, sum |y_i| == pulses.
    bool contains(std::span<const int> y) const noexcept {
        if (y.size() != dim()) return false;
        std::size_t total = 0;
        for (int v : y) {
            total += static_cast<std::size_t>(std::llabs(v));
            if (total > pulses()) return false;
        }
        return total == pulses();
    }

    // y: a point of P(N, K). Throws svq::invalid_argument (with the size or
    // the pulse sum) otherwise.
    Index rank(std::span<const int> y) const {
        if (y.size() != dim())
            throw invalid_argument(fmt::format("split_lattice::rank: point has {} entries, N = {}", y.size(), dim()));
        long long total = 0;
        for (int v : y) total += std::llabs(v);
        if (total != static_cast<long long>(pulses()))
            throw invalid_argument(
                fmt::format("split_lattice::rank: sum |y_i| = {}, expected K = {}", total, pulses()));
        return index_.rank<Index>(y);
    }

    // index in [0, V(N, K)) -> y (dim ints). Throws svq::corrupt_data for an
    // index outside the range (index and V in decimal), svq::invalid_argument
    // for a wrong output size.
    void unrank(const Index& index, std::span<int> y) const {
        if (y.size() != dim())
            throw invalid_argument(
                fmt::format("split_lattice::unrank: output has {} entries, N = {}", y.size(), dim()));
        if (!(index < size_))
            throw corrupt_data(fmt::format("split_lattice::unrank: index {} is not below V(N={}, K={}) = {}",
                                           to_decimal(index), dim(), pulses(), to_decimal(size_)));
        std::array<std::uint64_t, detail::max_split_limbs> words{};
        detail::index_to_limbs(index, words.data(), index_.limbs());
        index_.unrank(words.data(), y.data());
    }

private:
    Index size_;  // first: a too-narrow Index throws before the tables are built
    pvq_split_index index_;
};

// The library's single-vector PVQ codec: the search (or another shape
// quantizer S) and the split-order index of the matrix format.
template <IndexType Index, ShapeQuantizer S = pvq_shape_quantizer>
using pvq_vector_codec = pvq_codec<split_lattice<Index>, S>;

}  // namespace svq
