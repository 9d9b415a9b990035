// The coordinate order of the PVQ index written plainly: a bijection between
// the points of the pyramid P(N, K) and the integers [0, V(N, K)), in O(N + K)
// index-type additions per vector. The tests' oracle of the point set (its
// brute-force checks in tests/test_pvq_lattice.cpp) and the example of a
// user-defined Lattice plugged into svq::pvq_codec; not part of the library,
// whose index is the split order (format/split_lattice.hpp).
//
// Order (docs/pvq.md, "The coordinate order"): coordinates are read first to
// last. With n dimensions and k pulses left, the points whose current
// coordinate is 0 come first (V(n-1, k) of them), then for j = 1, 2, ..., k
// the points with coordinate +j (V(n-1, k-j) of them) followed by those with
// -j. So
//
//   offset(0) = 0,  offset(+j) = V(n-1, k) + 2 sum_{t=1}^{j-1} V(n-1, k-t),
//   offset(-j) = offset(+j) + V(n-1, k-j),
//
// and rank(y) is the sum of the offsets along y.
#pragma once

#include <svq/core/wide_uint.hpp>
#include <svq/error.hpp>
#include <svq/pvq/count.hpp>

#include <fmt/format.h>

#include <cstddef>
#include <cstdlib>
#include <span>

namespace svq::oracle {

using svq::corrupt_data;
using svq::IndexType;
using svq::invalid_argument;
using svq::pvq_count_table;

template <IndexType Index>
class pvq_coordinate_lattice {
public:
    using index_type = Index;

    // dim >= 1, pulses >= 1. Throws svq::invalid_argument for zero sizes and
    // svq::overflow_error (naming N, K and the bits required) when the index
    // does not fit in Index.
    pvq_coordinate_lattice(std::size_t dim, std::size_t pulses) : table_(checked(dim, pulses)) {}

    std::size_t dim() const noexcept { return table_.dim(); }
    std::size_t pulses() const noexcept { return table_.pulses(); }
    // V(N, K): number of points.
    const Index& size() const noexcept { return table_.size(); }
    // Bits of a stored index: ceil(log2 V(N, K)).
    std::size_t index_bits() const noexcept { return index_bits_; }
    const pvq_count_table<Index>& counts() const noexcept { return table_; }

    // y: dim ints with sum |y_i| == pulses. Throws svq::invalid_argument otherwise.
    Index rank(std::span<const int> y) const {
        validate_point(y);
        return rank_unchecked(y);
    }

    // index in [0, V(N, K)) -> y (dim ints). Throws svq::corrupt_data for an
    // index outside the range, svq::invalid_argument for a wrong span size.
    void unrank(const Index& index, std::span<int> y) const {
        if (y.size() != dim())
            throw invalid_argument(fmt::format("pvq_coordinate_lattice::unrank: output has {} entries, N = {}", y.size(), dim()));
        if (!(index < size()))
            throw corrupt_data(fmt::format("pvq_coordinate_lattice::unrank: index {} is not below V(N={}, K={}) = {}",
                                           to_decimal(index), dim(), pulses(), to_decimal(size())));
        unrank_unchecked(index, y);
    }

    // Hot paths: input assumed valid (a point of P(N, K); an index below V).
    //
    // rank walks the coordinates last to first: the offsets of the suffix
    // y[d..N-1] sum to its rank within P(N-d, k_d), which is below V(N-d, k_d),
    // so each addition needs only that many words (half the work on average).
    Index rank_unchecked(std::span<const int> y) const noexcept {
        Index index(0u);
        std::size_t k = 0;  // pulses in y[d..N-1]
        const std::size_t n_dims = dim();
        for (std::size_t d = n_dims; d-- > 0;) {
            const std::size_t n = n_dims - d;
            const int v = y[d];
            if (v == 0) continue;
            const auto j = static_cast<std::size_t>(v < 0 ? -v : v);
            k += j;
            const std::size_t used = table_.words(n, k);
            add_in_words(index, table_(n - 1, k), used);
            for (std::size_t t = 1; t < j; ++t) {
                add_in_words(index, table_(n - 1, k - t), used);
                add_in_words(index, table_(n - 1, k - t), used);
            }
            if (v < 0) add_in_words(index, table_(n - 1, k - j), used);
        }
        return index;
    }

    void unrank_unchecked(Index index, std::span<int> y) const noexcept {
        std::size_t k = pulses();
        const std::size_t n_dims = dim();
        for (std::size_t d = 0; d < n_dims; ++d) {
            const std::size_t n = n_dims - d;
            if (k == 0) {
                y[d] = 0;
                continue;
            }
            // The index is below V(n, k) here, and so is every block: compare only its words.
            const std::size_t used = table_.words(n, k);
            if (!try_sub(index, table_(n - 1, k), used)) {  // in the block where this coordinate is 0
                y[d] = 0;
                continue;
            }
            std::size_t j = 1;
            for (;; ++j) {
                const Index& block = table_(n - 1, k - j);
                if (!try_sub(index, block, used)) {
                    y[d] = static_cast<int>(j);
                    break;
                }
                if (!try_sub(index, block, used)) {
                    y[d] = -static_cast<int>(j);
                    break;
                }
            }
            k -= j;
        }
    }

    // True when y is a point of P(N, K).
    bool contains(std::span<const int> y) const noexcept {
        if (y.size() != dim()) return false;
        std::size_t total = 0;
        for (int v : y) {
            total += static_cast<std::size_t>(v < 0 ? -static_cast<long long>(v) : v);
            if (total > pulses()) return false;
        }
        return total == pulses();
    }

private:
    static pvq_count_table<Index> checked(std::size_t dim, std::size_t pulses) {
        if (dim == 0) throw invalid_argument("pvq_coordinate_lattice: dimension N must be >= 1, got 0");
        if (pulses == 0) throw invalid_argument(fmt::format("pvq_coordinate_lattice: pulses K must be >= 1, got 0 (N = {})", dim));
        return pvq_count_table<Index>(dim, pulses);
    }

    void validate_point(std::span<const int> y) const {
        if (y.size() != dim())
            throw invalid_argument(fmt::format("pvq_coordinate_lattice::rank: point has {} entries, N = {}", y.size(), dim()));
        long long total = 0;
        for (int v : y) total += std::llabs(v);
        if (total != static_cast<long long>(pulses()))
            throw invalid_argument(fmt::format("pvq_coordinate_lattice::rank: sum |y_i| = {}, expected K = {}", total, pulses()));
    }

    pvq_count_table<Index> table_;
    std::size_t index_bits_ = pvq_index_bits(table_.dim(), table_.pulses());
};

}  // namespace svq::oracle
