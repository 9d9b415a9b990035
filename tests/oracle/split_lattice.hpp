// The split order of the PVQ index (format/split_index.hpp) written as its
// definition: prefix sums recomputed at every node and quotients by binary
// long division, O(K) index multiplications per node. The specification the
// tests check the library's table-driven pvq_split_index and the matrix
// kernels against; not part of the library.
#pragma once

#include <svq/format/split_index.hpp>
#include <svq/pvq/count.hpp>

#include <fmt/format.h>

#include <cstddef>
#include <cstdlib>
#include <span>

namespace svq::oracle {

using svq::invalid_argument;
using svq::overflow_error;
using svq::corrupt_data;
using svq::IndexType;
using svq::pvq_count_table;

// Index-type arithmetic for the plain definition below.
template <IndexType Index>
Index index_mul(const Index& a, const Index& b) noexcept {
    if constexpr (svq::detail::is_wide_uint<Index>::value)
        return a * b;
    else
        return static_cast<Index>(a * b);
}


// The split order written as its definition: prefix sums recomputed at every
// node and quotients by binary long division. O(K) index multiplications per
// node; for tests and as the specification (tests/test_kernels.cpp checks the
// table-driven pvq_split_index and the matrix kernels against it).
template <IndexType Index>
class pvq_split_lattice {
public:
    using index_type = Index;

    // dim >= 1, pulses >= 1; throws like pvq_coordinate_lattice (svq::overflow_error when
    // V(N, K) does not fit Index).
    pvq_split_lattice(std::size_t dim, std::size_t pulses)
        : table_(checked(dim, pulses)), quad_(dim >= svq::detail::quad_dim && svq::detail::quad_nodes(pulses)) {}

    std::size_t dim() const noexcept { return table_.dim(); }
    std::size_t pulses() const noexcept { return table_.pulses(); }
    const Index& size() const noexcept { return table_.size(); }

    // y: dim ints with sum |y_i| == pulses. Throws svq::invalid_argument otherwise.
    Index rank(std::span<const int> y) const {
        long long total = 0;
        for (int v : y) total += std::llabs(v);
        if (y.size() != dim() || total != static_cast<long long>(pulses()))
            throw invalid_argument(
                fmt::format("pvq_split_lattice::rank: point of {} entries with sum |y_i| = {}, "
                            "expected N = {} and K = {}",
                            y.size(), total, dim(), pulses()));
        return rank_node(y.data(), dim(), pulses());
    }

    // index < V(N, K) -> y (dim ints). Throws svq::corrupt_data for an index
    // outside the range, svq::invalid_argument for a wrong span size.
    void unrank(const Index& index, std::span<int> y) const {
        if (y.size() != dim())
            throw invalid_argument(
                fmt::format("pvq_split_lattice::unrank: output has {} entries, N = {}", y.size(), dim()));
        if (!(index < size()))
            throw corrupt_data(fmt::format("pvq_split_lattice::unrank: index {} is not below V(N={}, K={}) = {}",
                                           to_decimal(index), dim(), pulses(), to_decimal(size())));
        unrank_node(index, dim(), pulses(), y.data());
    }

private:
    static pvq_count_table<Index> checked(std::size_t dim, std::size_t pulses) {
        if (dim == 0) throw invalid_argument("pvq_split_lattice: dimension N must be >= 1, got 0");
        if (pulses == 0)
            throw invalid_argument(fmt::format("pvq_split_lattice: pulses K must be >= 1, got 0 (N = {})", dim));
        return pvq_count_table<Index>(dim, pulses);
    }

    // V(nL, t) V(nR, k - t): the number of points with t pulses on the left.
    Index block(std::size_t nl, std::size_t nr, std::size_t k, std::size_t t) const noexcept {
        return index_mul(table_(nl, t), table_(nr, k - t));
    }

    Index rank_node(const int* y, std::size_t n, std::size_t k) const noexcept {
        if (k == 0) return Index(0u);
        if (n == 1) return Index(y[0] < 0 ? 1u : 0u);
        if (n == svq::detail::quad_dim && quad_) return rank_quad(y, k);
        const std::size_t nl = n / 2, nr = n - nl;
        std::size_t kl = 0;
        for (std::size_t i = 0; i < nl; ++i) kl += static_cast<std::size_t>(std::abs(y[i]));
        Index index(0u);
        for (std::size_t t = 0; t < kl; ++t) index += block(nl, nr, k, t);
        index += index_mul(rank_node(y, nl, kl), table_(nr, k - kl));
        index += rank_node(y + nl, nr, k - kl);
        return index;
    }

    // Four-way node: the compositions before (k1, k2, k3, k4), then the
    // quarters' indices mixed-radix, the first quarter most significant.
    Index rank_quad(const int* y, std::size_t k) const noexcept {
        std::size_t kt[4] = {0, 0, 0, 0};
        for (std::size_t i = 0; i < 16; ++i) kt[i / 4] += static_cast<std::size_t>(std::abs(y[i]));
        Index index(0u);
        Index scale(1u);  // V(4, k1) ... V(4, k_(q-1)): the size of one composition's prefix class
        std::size_t left = k;
        for (std::size_t q = 0; q < 3; ++q) {
            const std::size_t rest = 12 - 4 * q;  // coordinates after quarter q
            for (std::size_t t = 0; t < kt[q]; ++t)
                index += index_mul(scale, block(4, rest, left, t));
            scale = index_mul(scale, table_(4, kt[q]));
            left -= kt[q];
        }
        Index mix(0u);
        for (std::size_t q = 0; q < 4; ++q)
            mix = index_mul(mix, table_(4, kt[q])) + rank_node(y + 4 * q, 4, kt[q]);
        return index + mix;
    }

    // Binary long division: a = q * d + r.
    static void divide(const Index& a, const Index& d, Index& q, Index& r) noexcept {
        if constexpr (svq::detail::is_wide_uint<Index>::value) {
            q = Index(0u);
            r = Index(0u);
            for (std::size_t b = a.bit_width(); b-- > 0;) {
                r <<= 1;
                if (a.bit(b)) r += Index(1u);
                q <<= 1;
                if (!(r < d)) {
                    r -= d;
                    q += Index(1u);
                }
            }
        } else {
            q = a / d;
            r = a % d;
        }
    }

    void unrank_node(Index index, std::size_t n, std::size_t k, int* y) const noexcept {
        if (k == 0) {
            std::fill_n(y, n, 0);
            return;
        }
        if (n == 1) {
            y[0] = index == Index(0u) ? static_cast<int>(k) : -static_cast<int>(k);
            return;
        }
        if (n == svq::detail::quad_dim && quad_) {
            unrank_quad(index, k, y);
            return;
        }
        const std::size_t nl = n / 2, nr = n - nl;
        std::size_t t = 0;
        for (;; ++t) {
            const Index b = block(nl, nr, k, t);
            if (index < b) break;
            index -= b;
        }
        Index il, ir;
        divide(index, table_(nr, k - t), il, ir);
        unrank_node(il, nl, t, y);
        unrank_node(ir, nr, k - t, y + nl);
    }

    void unrank_quad(Index index, std::size_t k, int* y) const noexcept {
        std::size_t kt[4];
        Index scale(1u);
        std::size_t left = k;
        for (std::size_t q = 0; q < 3; ++q) {
            const std::size_t rest = 12 - 4 * q;
            std::size_t t = 0;
            for (;; ++t) {
                const Index b = index_mul(scale, block(4, rest, left, t));
                if (index < b) break;
                index -= b;
            }
            kt[q] = t;
            scale = index_mul(scale, table_(4, t));
            left -= t;
        }
        kt[3] = left;
        Index it[4];
        for (std::size_t q = 4; q-- > 1;) {
            Index quotient;
            divide(index, table_(4, kt[q]), quotient, it[q]);
            index = quotient;
        }
        it[0] = index;
        for (std::size_t q = 0; q < 4; ++q) unrank_node(it[q], 4, kt[q], y + 4 * q);
    }

    pvq_count_table<Index> table_;
    bool quad_ = false;  // nodes of 16 split four ways
};

}  // namespace svq::oracle
