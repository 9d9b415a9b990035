// Exact point counts of the pyramid P(N, K) = { y in Z^N : sum |y_i| = K }.
//
//   V(N, 0) = 1,  V(0, K > 0) = 0,
//   V(N, K) = V(N-1, K) + V(N, K-1) + V(N-1, K-1)              (Fischer 1986)
//           = sum_{i >= 1} 2^i C(N, i) C(K-1, i-1)                (closed form)
//   U(N, K) = sum_{k < K} V(N-1, k),   V(N, K) = U(N, K) + U(N, K+1).
//
// Everything here is constexpr and generic over the index type (a built-in
// unsigned integer or svq::wide_uint); overflow is always detected, never
// wrapped. docs/pvq.md derives the formulas; tests/test_pvq_count.cpp checks them.
#pragma once

#include <svq/core/wide_uint.hpp>
#include <svq/error.hpp>

#include <fmt/format.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace svq {

namespace detail {

// V(n, k) for one (n, k) by the row recurrence; nullopt when some V(m, j),
// m <= n, j <= k, does not fit in T (V is increasing in both arguments, so
// that happens exactly when V(n, k) itself does not fit). O(n k) additions, O(k) memory.
template <IndexType T>
constexpr std::optional<T> try_pvq_count(std::size_t n, std::size_t k) {
    if (k == 0) return T(1u);
    if (n == 0) return T(0u);
    // row[j] = V(m, j) for the current m; start at m = 0.
    std::vector<T> row(k + 1, T(0u));
    row[0] = T(1u);
    for (std::size_t m = 1; m <= n; ++m) {
        // New row in place, left to right: new[j] = old[j] + new[j-1] + old[j-1].
        T old_prev = row[0];  // old[j-1]
        for (std::size_t j = 1; j <= k; ++j) {
            T value = row[j];
            const T old_here = row[j];
            if (!checked_add(value, row[j - 1])) return std::nullopt;
            if (!checked_add(value, old_prev)) return std::nullopt;
            row[j] = value;
            old_prev = old_here;
        }
    }
    return row[k];
}

inline constexpr std::size_t max_counted_bits = 8192;

}  // namespace detail

namespace detail {

// bit_width(V(n, k) - 1) when V(n, k) fits in T.
template <IndexType T>
std::optional<std::size_t> try_pvq_index_bits(std::size_t n, std::size_t k) {
    auto v = try_pvq_count<T>(n, k);
    if (!v) return std::nullopt;
    if constexpr (is_wide_uint<T>::value) {
        if (v->is_zero()) return std::size_t{0};
        --*v;
        return v->bit_width();
    } else {
        return *v == 0 ? 0 : static_cast<std::size_t>(std::bit_width(*v - 1));
    }
}

}  // namespace detail

// Bits needed to store any index of P(n, k): ceil(log2 V(n, k)) = bit_width(V - 1).
// Throws svq::overflow_error beyond 8192 bits (no useful codec is that large).
// Counts in the narrowest of 64, 256, 1088 and 8192 bits that holds V, so the
// cost of a small (n, k) is that of machine words.
inline std::size_t pvq_index_bits(std::size_t n, std::size_t k) {
    if (const auto b = detail::try_pvq_index_bits<std::uint64_t>(n, k)) return *b;
    if (const auto b = detail::try_pvq_index_bits<wide_uint<256>>(n, k)) return *b;
    if (const auto b = detail::try_pvq_index_bits<wide_uint<1088>>(n, k)) return *b;
    if (const auto b = detail::try_pvq_index_bits<wide_uint<detail::max_counted_bits>>(n, k)) return *b;
    throw overflow_error(fmt::format("pvq_index_bits: V(N={}, K={}) needs more than {} bits", n, k,
                                     detail::max_counted_bits));
}

// V(n, k) in the index type T. Throws svq::overflow_error naming N, K and the
// bits required when V(n, k) - 1 (the largest index) does not fit in T.
template <IndexType T>
constexpr T pvq_count(std::size_t n, std::size_t k) {
    const auto v = detail::try_pvq_count<T>(n, k);
    if (!v)
        throw overflow_error(fmt::format("PVQ index of N={}, K={} needs {} bits; the index type holds {}", n, k,
                                         pvq_index_bits(n, k), index_bits_v<T>));
    return *v;
}

// V(N, K) evaluated at compile time: a compile error (not a constant
// expression) when it does not fit in T.
template <IndexType T, std::size_t N, std::size_t K>
inline constexpr T pvq_count_v = pvq_count<T>(N, K);

// Table of V(n, k) for 0 <= n <= dim, 0 <= k <= pulses, the data rank and
// unrank walk through. Entry (n, k) at k * (dim + 1) + n: rank and unrank step
// n down by one per coordinate while k changes slowly, so with k-major storage
// consecutive steps touch neighbouring entries (a 1024-bit table at N = 256,
// K = 760 is 25 MB; n-major order made every step a cache miss, 2x slower).
template <IndexType T>
class pvq_count_table {
public:
    pvq_count_table() = default;
    // Throws svq::overflow_error when V(dim, pulses) does not fit in T.
    pvq_count_table(std::size_t dim, std::size_t pulses) : dim_(dim), pulses_(pulses) {
        (void)pvq_count<T>(dim, pulses);  // throws with the required bits if it does not fit
        table_.assign((dim + 1) * (pulses + 1), T(0u));
        for (std::size_t n = 0; n <= dim; ++n) table_[at(n, 0)] = T(1u);
        for (std::size_t k = 1; k <= pulses; ++k) {
            for (std::size_t n = 1; n <= dim; ++n) {
                // Cannot overflow: every entry is <= V(dim, pulses), which fits.
                table_[at(n, k)] = table_[at(n - 1, k)] + table_[at(n, k - 1)] + table_[at(n - 1, k - 1)];
            }
        }
        words_.resize(table_.size());
        for (std::size_t i = 0; i < table_.size(); ++i) words_[i] = static_cast<std::uint16_t>(used_words_of(table_[i]));
    }

    std::size_t dim() const noexcept { return dim_; }
    std::size_t pulses() const noexcept { return pulses_; }
    // V(n, k) for n <= dim, k <= pulses (unchecked).
    const T& operator()(std::size_t n, std::size_t k) const noexcept { return table_[at(n, k)]; }
    // Words of the index type that V(n, k) occupies (1 for built-in types).
    std::size_t words(std::size_t n, std::size_t k) const noexcept { return words_[at(n, k)]; }
    // V(dim, pulses): the number of points, one past the largest index.
    const T& size() const noexcept { return (*this)(dim_, pulses_); }
    // U(n, k) = sum_{j < k} V(n - 1, j) for 1 <= n <= dim, k <= pulses + 1.
    T u(std::size_t n, std::size_t k) const noexcept {
        T s(0u);
        for (std::size_t j = 0; j < k; ++j) s += (*this)(n - 1, j);
        return s;
    }

private:
    std::size_t at(std::size_t n, std::size_t k) const noexcept { return k * (dim_ + 1) + n; }

    std::size_t dim_ = 0;
    std::size_t pulses_ = 0;
    std::vector<T> table_;
    std::vector<std::uint16_t> words_;
};

}  // namespace svq
