// Split-order enumeration of the pyramid P(N, K): the index order of the
// packed matrix format version 3 (docs/performance.md, "Index order").
//
// A group of n coordinates is split into a left half of nL = floor(n / 2)
// and a right half of nR = n - nL coordinates. With k pulses, the points
// whose left half holds j pulses come before those with j + 1, and inside one
// j the index is mixed-radix over (left index, right index):
//
//   index = C_{n,k}(j) + iL * V(nR, k - j) + iR,
//   C_{n,k}(j) = sum_{t < j} V(nL, t) V(nR, k - t),      C_{n,k}(k + 1) = V(n, k),
//
// recursively down to one coordinate (V(1, 0) = 1; V(1, k > 0) = 2: index 0
// is +k, 1 is -k). One exception (version 3): where V(16, K) fits a 64-bit
// word, a node of 16 coordinates splits four ways, into quarters of 4 with
// k1 + k2 + k3 + k4 = k pulses, in composition order: compositions
// (k1, k2, k3, k4) in lexicographic order, and inside one composition the
// mixed-radix index ((i1 V(4, k2) + i2) V(4, k3) + i3) V(4, k4) + i4 of the
// quarters' own indices. The offset of a composition is
//
//   A_k(k1) + V(4, k1) B_{k-k1}(k2) + V(4, k1) V(4, k2) C_{k-k1-k2}(k3),
//
// with A, B, C the prefix rows of the splits 4|12, 4|8 and 4|4 (C_{n,k} above
// with nL = 4). Decoding such a node is one search among the compositions
// (a table for the pulse counts met in practice) and three divisions by
// V(4, .), against three searches and three divisions for 8|8 then 4|4.
//
// Either way it is a bijection onto [0, V(N, K)), so a group costs the
// same ceil(log2 V(N, K)) bits as the coordinate-by-coordinate order
// (docs/pvq.md); only the order differs. Its use: unranking touches the
// wide integer only at the top of the tree (a 384-bit index is split into two
// ~190-bit halves, those into ~95-bit quarters, ...), everything below 64 bits
// is machine arithmetic, and the two halves decode independently.
//
//   pvq_split_lattice<Index>  the definition, written plainly (prefix sums
//                             recomputed, binary long division); the oracle of
//                             tests/test_kernels.cpp.
//   pvq_split_index           the table-driven coder the matrix format uses:
//                             prefix rows C_{n,k}(.) precomputed once per
//                             (N, K) for the node sizes of the tree, each row
//                             in the fewest 64-bit words that hold V(n, k);
//                             a guide per row (bucket of r / V(n, k) -> j) in
//                             place of a binary search; Knuth division for the
//                             wide levels (code per word count up to 512 bits,
//                             divisors normalised and their top word's
//                             reciprocal precomputed), machine words below,
//                             composition tables for the four-way nodes,
//                             tables of all points of P(4, k) and, at low
//                             rates, P(8, k) for small k; unrank_batch walks
//                             many groups breadth-first so that their
//                             independent nodes overlap.
#pragma once

#include <svq/core/limbs.hpp>
#include <svq/core/wide_uint.hpp>
#include <svq/error.hpp>
#include <svq/pvq/count.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

namespace svq {

namespace detail {

// Largest index width the matrix codec instantiates (1024 bits) plus one word.
inline constexpr std::size_t max_split_limbs = max_limbs;

// Whether the nodes of 16 coordinates of a group of `pulses` pulses split four
// ways (the file comment): exactly when V(16, pulses) fits one 64-bit word.
inline bool quad_nodes(std::size_t pulses) { return try_pvq_count<std::uint64_t>(16, pulses).has_value(); }
inline constexpr std::size_t quad_dim = 16;

// Words of an index type, little-endian, and back.
template <IndexType Index>
void index_to_limbs(const Index& x, std::uint64_t* out, std::size_t n) noexcept {
    if constexpr (is_wide_uint<Index>::value) {
        for (std::size_t i = 0; i < n; ++i) out[i] = i < Index::limbs ? x.words()[i] : 0;
    } else {
        out[0] = static_cast<std::uint64_t>(x);
        for (std::size_t i = 1; i < n; ++i) out[i] = 0;
    }
}
template <IndexType Index>
Index index_from_limbs(const std::uint64_t* in, std::size_t n) noexcept {
    if constexpr (is_wide_uint<Index>::value) {
        Index x;
        for (std::size_t i = 0; i < n && i < Index::limbs; ++i) x.words()[i] = in[i];
        return x;
    } else {
        return static_cast<Index>(in[0]);
    }
}

}  // namespace detail

// Table-driven split-order coder of P(N, K) (the same order as
// pvq_split_lattice). Built once per (N, K); rank and unrank allocate nothing.
class pvq_split_index {
public:
    // One node size of the tree.
    struct level {
        std::size_t n = 0;
        std::size_t nl = 0;                 // coordinates of the left child: n / 2, or 4 (see quad)
        bool quad = false;                  // a four-way node of 16 (file comment): left is the level
                                            // of 4, right that of 12 split 4|8 (its rows are B)
        std::size_t limbs = 1;              // words of V(n, K)
        int left = -1, right = -1;          // levels of the halves (n >= 2)
        std::vector<std::uint64_t> counts;  // V(n, k), k <= K: (K + 1) * limbs words
        std::vector<double> inverse;        // 1 / V(n, k), k <= K
        // V(n, k) shifted left until its top used word has its high bit set
        // (the divisor of Knuth's algorithm D, normalised once here), the
        // shift, and the words used.
        std::vector<std::uint64_t> norm;        // (K + 1) * limbs words
        std::vector<std::uint8_t> norm_shift;   // k -> shift
        std::vector<std::uint8_t> count_words;  // k -> words used by V(n, k) (>= 1)
        std::vector<std::uint64_t> norm_recip;  // k -> reciprocal_word of the top normalised word
        std::vector<std::uint8_t> row_limbs;    // k -> words of V(n, k): the stride of row k
        std::vector<std::size_t> row_start;     // k -> first word of C_{n,k}(0..k+1)
        std::vector<std::uint64_t> prefix;      // the rows C_{n,k}(.), row_limbs[k] words per entry
        std::vector<double> prefix_approx;      // C_{n,k}(t) * 2^(-64 (row_limbs[k] - 1)), rows of more than one word
        std::vector<std::size_t> approx_start;  // k -> first entry in prefix_approx
        // Guide of row k (k < guide_k): G_k = 2 (k + 1) buckets of equal width
        // over [0, V(n, k)); bucket b holds the j of its lowest index, so the
        // search for j is one load plus a step or two instead of a binary search.
        std::size_t guide_k = 0;
        std::vector<std::uint16_t> guide;
        std::vector<std::uint32_t> guide_start;  // k -> first bucket
        std::vector<double> guide_scale;         // k -> G_k / V(n, k) (V scaled like approx(., row_limbs[k]))
        // The bucket of r (row k, row_limbs[k] words), clamped to the row.
        std::size_t bucket(std::size_t k, double ra) const noexcept {
            const auto b = static_cast<std::size_t>(ra * guide_scale[k]);
            return std::min(b, 2 * k + 1);
        }
        const std::uint64_t* count(std::size_t k) const noexcept { return counts.data() + k * limbs; }
        const std::uint64_t* row(std::size_t k) const noexcept { return prefix.data() + row_start[k]; }
    };

    pvq_split_index() = default;
    // dim >= 1, 1 <= pulses; throws svq::invalid_argument for zero sizes and
    // svq::overflow_error when V(N, K) needs more than 1024 bits.
    pvq_split_index(std::size_t dim, std::size_t pulses) : dim_(dim), pulses_(pulses) {
        if (dim == 0) throw invalid_argument("pvq_split_index: dimension N must be >= 1, got 0");
        if (pulses == 0)
            throw invalid_argument(fmt::format("pvq_split_index: pulses K must be >= 1, got 0 (N = {})", dim));
        index_bits_ = pvq_index_bits(dim, pulses);
        if (index_bits_ > 1024)
            throw overflow_error(fmt::format("pvq_split_index: index of N={}, K={} needs {} bits (at most 1024)", dim,
                                             pulses, index_bits_));
        quad_ = dim >= detail::quad_dim && detail::quad_nodes(pulses);
        root_ = build(dim, true);
        // Nodes of each level in one tree (children have lower level numbers);
        // a four-way node has four children of 4 (its level of 12 only lends its rows).
        nodes_.assign(levels_.size(), 0);
        nodes_[static_cast<std::size_t>(root_)] = 1;
        for (std::size_t i = levels_.size(); i-- > 0;) {
            if (levels_[i].quad) {
                nodes_[static_cast<std::size_t>(levels_[i].left)] += 4 * nodes_[i];
            } else if (levels_[i].n >= 2) {
                nodes_[static_cast<std::size_t>(levels_[i].left)] += nodes_[i];
                nodes_[static_cast<std::size_t>(levels_[i].right)] += nodes_[i];
            }
        }
        build_leaves();
        build_quad();
        build_dense();
    }

    std::size_t dim() const noexcept { return dim_; }
    std::size_t pulses() const noexcept { return pulses_; }
    std::size_t index_bits() const noexcept { return index_bits_; }
    // Words of a group's index (of V(N, K)).
    std::size_t limbs() const noexcept { return levels_[static_cast<std::size_t>(root_)].limbs; }
    const std::vector<level>& levels() const noexcept { return levels_; }
    int root() const noexcept { return root_; }
    // V(N, K) in limbs() words.
    const std::uint64_t* size_limbs() const noexcept { return levels_[static_cast<std::size_t>(root_)].count(pulses_); }
    // Bytes of the tables.
    std::size_t table_bytes() const noexcept {
        std::size_t b = 0;
        for (const level& l : levels_)
            b += 8 * (l.counts.size() + l.prefix.size() + l.prefix_approx.size() + l.inverse.size() + l.norm.size() +
                      l.norm_recip.size() + l.guide_scale.size()) +
                 l.norm_shift.size() + l.count_words.size() +
                 sizeof(std::size_t) * (l.row_start.size() + l.approx_start.size()) + l.row_limbs.size() +
                 2 * l.guide.size() + 4 * l.guide_start.size();
        b += 4 * leaf4_.size() + sizeof(std::size_t) * leaf_start_.size() + 8 * leaf8_.size() +
             sizeof(std::size_t) * leaf8_start_.size();
        for (const dense_level& dl : dense_)
            b += sizeof(exact_division) * dl.div.size() + sizeof(dense_level::row_info) * dl.rows.size() +
                 dl.guide.size();
        b += 4 * leaf_start32_.size();
        b += 8 * comp_offsets_.size() + 4 * comp_parts_.size() + 2 * comp_guide_.size() +
             sizeof(quad_row) * quad_rows_.size() +
             sizeof(exact_division) * quad_radix_.size();
        return b;
    }

    // index (limbs() words) < V(N, K)?
    bool in_range(const std::uint64_t* index) const noexcept {
        return detail::limbs_less(index, size_limbs(), limbs());
    }

    // y: a point of P(N, K) (dim ints, unchecked); index: limbs() words.
    void rank(const int* y, std::uint64_t* index) const noexcept { rank_node(root_, pulses_, y, index); }
    template <IndexType Index>
    Index rank(std::span<const int> y) const noexcept {
        std::array<std::uint64_t, detail::max_split_limbs> w{};
        rank(y.data(), w.data());
        return detail::index_from_limbs<Index>(w.data(), limbs());
    }

    // index (limbs() words, < V(N, K), unchecked) -> y (dim ints).
    void unrank(const std::uint64_t* index, int* y) const {
        thread_local unrank_workspace ws;  // allocation-free after a thread's first call
        unrank_batch(index, 1, y, ws);
    }

    // Scratch of unrank_batch (reused across calls to avoid allocations).
    struct unrank_workspace {
        struct wide_task {
            int lv;
            std::uint32_t k;
            std::uint32_t y;  // offset of the node's first coordinate in the output
            std::array<std::uint64_t, detail::max_split_limbs> r;
        };
        struct narrow_task {
            std::uint64_t r;
            std::uint32_t y;
            std::uint32_t k;
        };
        std::vector<wide_task> wide, wide_next;
        std::vector<narrow_task> narrow;  // one segment per level
        std::vector<std::size_t> start, fill;
    };

    // count indices (limbs() words each, index g at index + g * limbs(), each
    // < V(N, K), unchecked) -> count points (point g at y + g * dim()).
    // Breadth-first over the nodes of all count trees: first the wide nodes
    // depth by depth, then the 64-bit nodes level by level (largest first), so
    // one loop runs over many independent nodes of the same size with that
    // level's tables hoisted. The output is zeroed first and nodes with no
    // pulses are never queued.
    void unrank_batch(const std::uint64_t* index, std::size_t count, int* y, unrank_workspace& ws) const {
        const std::size_t w = limbs(), nl = levels_.size();
        std::fill_n(y, count * dim_, 0);
        ws.wide.clear();
        ws.start.resize(nl + 1);
        ws.fill.assign(nl, 0);
        ws.start[0] = 0;
        for (std::size_t i = 0; i < nl; ++i) ws.start[i + 1] = ws.start[i] + count * nodes_[i];
        if (ws.narrow.size() < ws.start[nl]) ws.narrow.resize(ws.start[nl]);
        for (std::size_t g = 0; g < count; ++g)
            queue(ws, ws.wide, root_, pulses_, index + g * w, static_cast<std::uint32_t>(g * dim_));
        while (!ws.wide.empty()) {
            ws.wide_next.clear();
            for (const auto& t : ws.wide) {
                const level& l = levels_[static_cast<std::size_t>(t.lv)];
                std::size_t j = 0;
                std::array<std::uint64_t, detail::max_split_limbs> q, rr;
                split_wide(l, t.k, t.r.data(), j, q.data(), rr.data());
                queue(ws, ws.wide_next, l.left, j, q.data(), t.y);
                queue(ws, ws.wide_next, l.right, t.k - j, rr.data(), t.y + static_cast<std::uint32_t>(l.nl));
            }
            std::swap(ws.wide, ws.wide_next);
        }
        for (std::size_t lv = nl; lv-- > 0;) {
            const level& l = levels_[lv];
            const auto* task = ws.narrow.data() + ws.start[lv];
            const std::size_t m = ws.fill[lv];
            if (l.n == 1) {
                for (std::size_t i = 0; i < m; ++i) {
                    const int ik = static_cast<int>(task[i].k);
                    y[task[i].y] = task[i].r != 0 ? -ik : ik;
                }
                continue;
            }
            if (l.n == 2) {
                for (std::size_t i = 0; i < m; ++i) unrank2(task[i].k, task[i].r, y + task[i].y);
                continue;
            }
            if (l.quad) {  // four children of 4 each, into the level of 4's queue
                auto* four_q = ws.narrow.data() + ws.start[static_cast<std::size_t>(l.left)];
                std::size_t& four_fill = ws.fill[static_cast<std::size_t>(l.left)];
                for (std::size_t i = 0; i < m; ++i) {
                    std::size_t kt[4];
                    std::uint64_t it[4];
                    split_quad(l, task[i].k, task[i].r, kt, it);
                    for (std::uint32_t q = 0; q < 4; ++q) {
                        four_q[four_fill] = {it[q], task[i].y + 4 * q, static_cast<std::uint32_t>(kt[q])};
                        four_fill += kt[q] != 0;
                    }
                }
                continue;
            }
            const bool leaves = l.n == 4 && leaf_k_ > 0;
            const bool leaves8 = l.n == 8 && leaf8_k_ > 0;
            const std::uint32_t half = static_cast<std::uint32_t>(l.nl);
            const level& right = levels_[static_cast<std::size_t>(l.right)];
            const std::uint64_t* rcounts = right.counts.data();
            const double* rinverse = right.inverse.data();
            const std::size_t rlimbs = right.limbs;
            auto* left_q = ws.narrow.data() + ws.start[static_cast<std::size_t>(l.left)];
            auto* right_q = ws.narrow.data() + ws.start[static_cast<std::size_t>(l.right)];
            std::size_t& left_fill = ws.fill[static_cast<std::size_t>(l.left)];
            std::size_t& right_fill = ws.fill[static_cast<std::size_t>(l.right)];
            for (std::size_t i = 0; i < m; ++i) {
                const std::size_t k = task[i].k;
                std::uint64_t r = task[i].r;
                int* out = y + task[i].y;
                if (leaves && k < leaf_k_) {  // every point of P(4, k): one load
                    const std::uint32_t p = leaf4_[leaf_start_[k] + r];
                    for (int c = 0; c < 4; ++c) out[c] = static_cast<std::int8_t>(p >> (8 * c));
                    continue;
                }
                if (leaves8 && k < leaf8_k_) {  // every point of P(8, k), small k: one load
                    const std::uint64_t p = leaf8_[leaf8_start_[k] + r];
                    for (int c = 0; c < 8; ++c) out[c] = static_cast<std::int8_t>(p >> (8 * c));
                    continue;
                }
                const std::uint64_t* c = l.row(k);
                const std::size_t j = find64(l, k, r);
                r -= c[j];
                const std::uint64_t d = rcounts[(k - j) * rlimbs];
                std::uint64_t q;
                if (c[k + 1] <= (std::uint64_t{1} << 52)) {  // r < 2^52: a double estimate, off by at most one
                    q = static_cast<std::uint64_t>(static_cast<double>(r) * rinverse[k - j]);
                    const auto rem = static_cast<std::int64_t>(r - q * d);
                    q = rem < 0 ? q - 1 : (rem >= static_cast<std::int64_t>(d) ? q + 1 : q);
                } else {
                    q = r / d;
                }
                // Both halves are queued (a node without pulses writes nothing;
                // skipping it would cost a branch per node).
                left_q[left_fill] = {q, task[i].y, static_cast<std::uint32_t>(j)};
                left_fill += j != 0;
                right_q[right_fill] = {r - q * d, task[i].y + half, static_cast<std::uint32_t>(k - j)};
                right_fill += k != j;
            }
        }
    }

    // Dense unrank (the speed configurations: docs/performance.md, "Speed
    // configurations"): for N a power of two >= 8 whose index fits one word
    // (V(N, K) < 2^64: N = 16 up to ~4 bpw, N = 32 at ~2 bpw) and K <= 127,
    // every node of depth d has a fixed slot (node i covers coordinates
    // [i n, (i + 1) n) of the batch), so the tree is walked level by level
    // over flat arrays: no queues, no branch on empty nodes (a node with
    // k = 0 splits into j = 0, q = 0 like any other), no zeroing of the
    // output (the n = 4 leaves, one load from the table of P(4, k), write
    // every coordinate). The root's row (k = K) is hoisted out of its loop.
    // Division by V(nR, k - j): a multiply-high and a shift, exact for every
    // index of the level (exact_division, the same as the four-way nodes'), or
    // the divide instruction where the level's indices pass 2^62.
    bool dense() const noexcept { return dense_on_; }
    // The table of all points of P(4, k) for k < leaf4_pulses() (0: none):
    // entry leaf4_start()[k] + r is the point of index r, four int8 packed
    // lowest coordinate first (unrank_dense's leaves read it).
    std::size_t leaf4_pulses() const noexcept { return leaf_k_; }
    std::span<const std::size_t> leaf4_start() const noexcept { return leaf_start_; }
    std::span<const std::uint32_t> leaf4_table() const noexcept { return leaf4_; }
    struct dense_workspace {
        std::vector<std::uint64_t> r[2];
        std::vector<std::uint8_t> k[2];
        std::vector<std::uint64_t> rest;   // four-way nodes: index within the composition
        std::vector<std::uint32_t> parts;  // four-way nodes: the composition (and its slow bit)
    };
    // count indices (one word each, < V(N, K), unchecked) -> count points as
    // int8 (point g at y + g * dim()). Requires dense(). tick(): called once
    // per node of the last level (per 16 coordinates with four-way nodes,
    // else per 4) while the points are written, so that a caller's memory
    // traffic (the matrix decoder streams its previous row out) spreads over
    // the walk instead of waiting for it. The walk runs a copy of tick (kept
    // in registers: the int8 stores could alias a referenced state) and
    // assigns it back at the end.
    struct no_tick {
        void operator()() const noexcept {}
    };
    void unrank_dense(const std::uint64_t* index, std::size_t count, std::int8_t* y, dense_workspace& ws) const {
        no_tick none;
        unrank_dense(index, count, y, ws, none);
    }
    template <class Tick>
    void unrank_dense(const std::uint64_t* index, std::size_t count, std::int8_t* y, dense_workspace& ws,
                      Tick& tick) const {
        const level& last = levels_[static_cast<std::size_t>(dense_levels_.back())];
        const std::size_t nodes = count * dim_ / last.n;
        for (int b = 0; b < 2; ++b) {
            if (ws.r[b].size() < nodes) ws.r[b].resize(nodes);
            if (ws.k[b].size() < nodes) ws.k[b].resize(nodes);
        }
        const std::uint64_t* rin = index;
        const std::uint8_t* kin = nullptr;
        std::size_t m = count;
        int cur = 0;
        for (std::size_t d = 0; d + 1 < dense_levels_.size(); ++d, m *= 2, cur ^= 1) {
            const dense_level& dl = dense_[d];
            std::uint64_t* rout = ws.r[cur].data();
            std::uint8_t* kout = ws.k[cur].data();
            if (d == 0) {
                if (dl.exact)
                    split_root<true>(dl, rin, m, rout, kout);
                else
                    split_root<false>(dl, rin, m, rout, kout);
            } else {
                if (dl.exact)
                    split_level<true>(dl, rin, kin, m, rout, kout);
                else
                    split_level<false>(dl, rin, kin, m, rout, kout);
            }
            rin = rout;
            kin = kout;
        }
        if (last.quad) {
            const bool root = kin == nullptr;
            if (ws.rest.size() < m) ws.rest.resize(m);
            if (ws.parts.size() < m) ws.parts.resize(m);
            if (quad_exact_)
                root ? quad_dense<true, true>(rin, kin, m, y, ws, tick) : quad_dense<false, true>(rin, kin, m, y, ws, tick);
            else
                root ? quad_dense<true, false>(rin, kin, m, y, ws, tick)
                     : quad_dense<false, false>(rin, kin, m, y, ws, tick);
            return;
        }
        const std::uint32_t* leaf = leaf4_.data();
        const std::uint32_t* start = leaf_start32_.data();
        const std::size_t leaf_k = leaf_k_;
        Tick local = tick;
        for (std::size_t i = 0; i < m; ++i) {
            local();
            const std::size_t k = kin[i];
            std::int8_t* out = y + 4 * i;
            if (k < leaf_k) [[likely]] {
                const std::uint32_t p = leaf[start[k] + rin[i]];
                for (int t = 0; t < 4; ++t) out[t] = static_cast<std::int8_t>(p >> (8 * t));
            } else {  // more pulses than the table holds (rare)
                int tmp[4];
                unrank64(dense_levels_.back(), k, rin[i], tmp);
                for (int t = 0; t < 4; ++t) out[t] = static_cast<std::int8_t>(tmp[t]);
            }
        }
        tick = local;
    }

    // Checked: svq::corrupt_data for an index >= V(N, K).
    template <IndexType Index>
    void unrank(const Index& index, std::span<int> y) const {
        if (y.size() != dim_)
            throw invalid_argument(
                fmt::format("pvq_split_index::unrank: output has {} entries, N = {}", y.size(), dim_));
        std::array<std::uint64_t, detail::max_split_limbs> w{};
        if (index_bits_v < Index >> 64 * limbs()) {
            detail::index_to_limbs(index, w.data(), detail::max_split_limbs);
            if (detail::limbs_used(w.data(), detail::max_split_limbs) > limbs() || !in_range(w.data()))
                throw corrupt_data(fmt::format("pvq_split_index::unrank: index {} is not below V(N={}, K={})",
                                               to_decimal(index), dim_, pulses_));
        } else {
            detail::index_to_limbs(index, w.data(), limbs());
            if (!in_range(w.data()))
                throw corrupt_data(fmt::format("pvq_split_index::unrank: index {} is not below V(N={}, K={})",
                                               to_decimal(index), dim_, pulses_));
        }
        unrank(w.data(), y.data());
    }

    // 64-bit node (V(n, K) < 2^64): the machine-word path of unrank.
    void unrank64(int lv, std::size_t k, std::uint64_t r, int* y) const noexcept {
        const level& l = levels_[static_cast<std::size_t>(lv)];
        if (k == 0) {
            std::fill_n(y, l.n, 0);
            return;
        }
        const int ik = static_cast<int>(k);
        if (l.n == 1) {
            y[0] = r != 0 ? -ik : ik;
            return;
        }
        if (l.n == 2) {
            unrank2(k, r, y);
            return;
        }
        if (l.n == 4 && k < leaf_k_) {  // every point of P(4, k): one load
            const std::uint32_t p = leaf4_[leaf_start_[k] + r];
            for (int i = 0; i < 4; ++i) y[i] = static_cast<std::int8_t>(p >> (8 * i));
            return;
        }
        if (l.quad) {
            std::size_t kt[4];
            std::uint64_t it[4];
            split_quad(l, k, r, kt, it);
            for (std::size_t q = 0; q < 4; ++q) unrank64(l.left, kt[q], it[q], y + 4 * q);
            return;
        }
        const std::uint64_t* c = l.row(k);
        const std::size_t j = find64(l, k, r);
        r -= c[j];
        const level& right = levels_[static_cast<std::size_t>(l.right)];
        const std::uint64_t d = right.counts[(k - j) * right.limbs];
        const std::uint64_t q = divide64(l, k, j, r);
        unrank64(l.left, j, q, y);
        unrank64(l.right, k - j, r - q * d, y + l.nl);
    }

    // r / V(nR, k - j) for r < V(nL, j) V(nR, k - j) (row k of 64-bit words).
    std::uint64_t divide64(const level& l, std::size_t k, std::size_t j, std::uint64_t r) const noexcept {
        const level& right = levels_[static_cast<std::size_t>(l.right)];
        const std::uint64_t d = right.counts[(k - j) * right.limbs];
        if (l.row(k)[k + 1] <= (std::uint64_t{1} << 52)) {
            // r < 2^52 is exact in a double; the estimate is off by at most one.
            auto q = static_cast<std::uint64_t>(static_cast<double>(r) * right.inverse[k - j]);
            const auto rem = static_cast<std::int64_t>(r - q * d);
            return rem < 0 ? q - 1 : (rem >= static_cast<std::int64_t>(d) ? q + 1 : q);
        }
        return r / d;
    }

    // Largest j in [0, k] with C(j) <= r (C(0) = 0 <= r < C(k + 1)) on a row of
    // 64-bit words: the guide's bucket, then steps (usually none); a
    // branch-free binary search for rows without a guide.
    static std::size_t find64(const level& l, std::size_t k, std::uint64_t r) noexcept {
        const std::uint64_t* c = l.row(k);
        if (k < l.guide_k) {
            std::size_t j = l.guide[l.guide_start[k] + l.bucket(k, static_cast<double>(r))];
            // One step each way without branches (a mispredicted step would
            // flush the neighbouring nodes' work), then the rare longer walks.
            j -= static_cast<std::size_t>(j > 0 && c[j] > r);
            j += static_cast<std::size_t>(c[j + 1] <= r);
            while (c[j] > r) --j;
            while (c[j + 1] <= r) ++j;
            return j;
        }
        const std::uint64_t* base = c;
        for (std::size_t len = k + 1; len > 1;) {
            const std::size_t half = len / 2;
            base = base[half] <= r ? base + half : base;
            len -= half;
        }
        return static_cast<std::size_t>(base - c);
    }

    // Two coordinates, k >= 1 pulses, r < 4k: the split order in closed form
    // (C(0) = 0, C(1) = 2, C(j) = 4j - 2 for 1 <= j <= k).
    static void unrank2(std::size_t k, std::uint64_t r, int* y) noexcept {
        const int ik = static_cast<int>(k);
        if (r < 2) {
            y[0] = 0;
            y[1] = r != 0 ? -ik : ik;
        } else if (r >= 4 * k - 2) {
            y[0] = r != 4 * k - 2 ? -ik : ik;
            y[1] = 0;
        } else {
            const auto j = static_cast<int>((r - 2) / 4 + 1);
            const std::uint64_t s = (r - 2) % 4;
            y[0] = (s & 2) != 0 ? -j : j;
            y[1] = (s & 1) != 0 ? -(ik - j) : ik - j;
        }
    }

    // A four-way node (k pulses, index r < V(16, k)) -> its quarters' pulses
    // kt and indices it (file comment): the composition from the table when
    // row k has one (guide bucket, then steps over the compositions' offsets),
    // else three searches in the prefix rows A, B, C; then the mixed radix.
    void split_quad(const level& l, std::size_t k, std::uint64_t r, std::size_t* kt,
                    std::uint64_t* it) const noexcept {
        if (k < quad_rows_.size() && quad_rows_[k].mul != 0) {
            const quad_row& qr = quad_rows_[k];
            const std::uint64_t* off = comp_offsets_.data() + qr.start;
            std::size_t c = comp_guide_[qr.guide + comp_bucket(qr.mul, r)];
            while (off[c + 1] <= r) ++c;
            r -= off[c];
            for (std::size_t q = 0; q < 4; ++q) kt[q] = (comp_parts_[qr.start + c] >> (8 * q)) & 0x7f;
        } else {
            const level& twelve = levels_[static_cast<std::size_t>(l.right)];
            const level& eight = levels_[static_cast<std::size_t>(twelve.right)];
            // largest j with s * row(j) <= r  <=>  row(j) <= floor(r / s)
            kt[0] = find64(l, k, r);
            r -= l.row(k)[kt[0]];
            std::size_t left = k - kt[0];
            std::uint64_t s = quad_radix_[kt[0]].d;
            kt[1] = find64(twelve, left, r / s);
            r -= s * twelve.row(left)[kt[1]];
            left -= kt[1];
            s *= quad_radix_[kt[1]].d;
            kt[2] = find64(eight, left, r / s);
            r -= s * eight.row(left)[kt[2]];
            kt[3] = left - kt[2];
        }
        for (std::size_t q = 3; q > 0; --q) {
            const std::uint64_t quotient = radix_quotient(quad_radix_[kt[q]], r);
            it[q] = r - quotient * quad_radix_[kt[q]].d;
            r = quotient;
        }
        it[0] = r;
    }

    // rank of a four-way node: the offset of its composition plus the mixed radix.
    std::uint64_t rank_quad(const level& l, std::size_t k, const int* y) const noexcept {
        std::size_t kt[4] = {0, 0, 0, 0};
        for (std::size_t i = 0; i < 16; ++i) kt[i / 4] += static_cast<std::size_t>(std::abs(y[i]));
        const level& twelve = levels_[static_cast<std::size_t>(l.right)];
        const level& eight = levels_[static_cast<std::size_t>(twelve.right)];
        std::uint64_t offset = l.row(k)[kt[0]];
        std::size_t left = k - kt[0];
        std::uint64_t s = quad_radix_[kt[0]].d;
        offset += s * twelve.row(left)[kt[1]];
        left -= kt[1];
        s *= quad_radix_[kt[1]].d;
        offset += s * eight.row(left)[kt[2]];
        std::uint64_t mix = 0;
        for (std::size_t q = 0; q < 4; ++q) {
            std::uint64_t i = 0;
            rank_node(l.left, kt[q], y + 4 * q, &i);
            mix = mix * quad_radix_[kt[q]].d + i;
        }
        return offset + mix;
    }

private:
    // The compositions (k1, k2, k3, k4) of one k in lexicographic order, in
    // two arrays so that the search reads only the first: comp_offsets_, the
    // first index with that composition; comp_parts_, the parts one byte each
    // (k1 lowest, each <= 127) with bit 31 set where a part has no P(4, k)
    // table entry. Each k's run ends with two sentinels (offsets V(16, k) and
    // 2^64 - 1). One k's compositions: the first entry in both arrays, the
    // first bucket in comp_guide_, comp_bucket's multiplier (0: no table).
    struct quad_row {
        std::uint64_t mul = 0;
        std::uint32_t start = 0, guide = 0;
    };
    // Division by a fixed d of every remainder below a bound 2^rbits: by
    // d = V(4, k) at the four-way nodes (r < V(16, K)) and by V(nR, t) at the
    // binary levels of the dense walk (r below the level's indices).
    // q = floor(r m / 2^(64 + shift)) with m = ceil(2^(64 + shift) / d) and
    // r d < 2^(64 + shift), exact (the error r (m d - 2^(64 + shift)) /
    // (d 2^(64 + shift)) < 1 / d). d = 1: m = 0 and the mask gives r. Where
    // the bound passes 2^62, m would pass 64 bits: the divide instruction is
    // used instead (Exact = false). leaf (four-way nodes only): the first
    // entry of P(4, k) in leaf4_.
    struct exact_division {
        std::uint64_t d = 1, m = 0, one = 0;
        std::uint32_t shift = 0, leaf = 0;
    };
    // The division by d of every r < 2^rbits: exact (m != 0 or d = 1) where
    // rbits <= 62, so that m < 2^(rbits + 1) fits a word; else m = 0 and the
    // caller divides (Exact = false in exact_quotient).
    static exact_division reciprocal(std::uint64_t d, unsigned rbits) noexcept {
        exact_division q;
        q.d = d;
        if (d == 1) {
            q.one = ~std::uint64_t{0};
        } else if (rbits <= 62) {
            const unsigned sh = std::max(64u, rbits + static_cast<unsigned>(std::bit_width(d)));
            q.shift = sh - 64;
            q.m = static_cast<std::uint64_t>(((detail::uint128{1} << sh) - 1) / d + 1);
        }
        return q;
    }
    template <bool Exact>
    static std::uint64_t exact_quotient(const exact_division& q, std::uint64_t r) noexcept {
        if constexpr (Exact)
            return (static_cast<std::uint64_t>((static_cast<detail::uint128>(r) * q.m) >> 64) >> q.shift) | (r & q.one);
        else
            return r / q.d;
    }
    // Guide bucket of r < V(16, k) among G buckets: floor(r mul / 2^64) with
    // mul = floor(2^64 G / V(16, k)) < G (monotone in r, so build_quad's guide
    // needs only forward steps).
    static std::size_t comp_bucket(std::uint64_t mul, std::uint64_t r) noexcept {
        return static_cast<std::size_t>((static_cast<detail::uint128>(r) * mul) >> 64);
    }
    std::uint64_t radix_quotient(const exact_division& q, std::uint64_t r) const noexcept {
        return quad_exact_ ? exact_quotient<true>(q, r) : exact_quotient<false>(q, r);
    }

private:
    // One level of the dense walk: the level's tables and the divisors of its
    // right half, V(nR, t) for t <= K, with their multiply-high reciprocals.
    struct dense_level {
        int lv = -1;
        bool exact = false;              // the level's indices are below 2^62: div's multiply-highs are exact
        std::vector<exact_division> div;  // t -> the division by V(nR, t)
        // Row k's prefix C_{n,k}(0..k+1) at prefix + rows[k].row, its guide
        // (2 (k + 1) buckets and one more, so the bucket needs no clamp) at
        // guide + rows[k].guide, and G_k / V(n, k) (0 for a row with no guide:
        // k too large for this level in practice, binary search).
        struct row_info {
            std::uint32_t row = 0, guide = 0;
            double scale = 0.0;
        };
        std::vector<row_info> rows;
        std::vector<std::uint8_t> guide;  // the root: 4 (K + 1) buckets of comp_bucket(root_mul, r), forward steps only
        std::uint64_t root_mul = 0;
    };

    // The guide's guess j corrected to the split: the largest j with c[j] <= r
    // (c[0] = 0 <= r, so never below 0). One branch-free step each way, both
    // loads at once (the prefix increases: c[j] > r implies c[j + 1] > r),
    // then the rare loops.
    static std::size_t settle_split(const std::uint64_t* c, std::size_t j, std::uint64_t r) noexcept {
        j = j - static_cast<std::size_t>(c[j] > r) + static_cast<std::size_t>(c[j + 1] <= r);
        while (c[j] > r) --j;
        while (c[j + 1] <= r) ++j;
        return j;
    }

    // A node of k pulses with index r (its prefix row c and split j found):
    // writes its children, (iL, j) at out[0] and (iR, k - j) at out[1].
    template <bool Exact>
    static void write_children(const exact_division* div, const std::uint64_t* c, std::size_t k, std::size_t j,
                               std::uint64_t r, std::uint64_t* rout, std::uint8_t* kout) noexcept {
        r -= c[j];
        const std::size_t t = k - j;
        const exact_division& dv = div[t];
        const std::uint64_t q = exact_quotient<Exact>(dv, r);
        rout[0] = q;
        kout[0] = static_cast<std::uint8_t>(j);
        rout[1] = r - q * dv.d;
        kout[1] = static_cast<std::uint8_t>(t);
    }

    template <bool Exact>
    void split_root(const dense_level& dl, const std::uint64_t* rin, std::size_t m, std::uint64_t* rout,
                    std::uint8_t* kout) const noexcept {
        const level& l = levels_[static_cast<std::size_t>(dl.lv)];
        const std::size_t k = pulses_;
        const std::uint64_t* c = l.row(k);
        const std::uint8_t* guide = dl.guide.data();
        const std::uint64_t mul = dl.root_mul;
        const exact_division* div = dl.div.data();  // in a local: the int8 stores could alias dl's members
        for (std::size_t i = 0; i < m; ++i) {
            const std::uint64_t r = rin[i];
            std::size_t j = guide[comp_bucket(mul, r)];
            // Two forward steps as one (the prefix increases; c[k + 1] > r
            // stands in for a second step past the row's end).
            j += static_cast<std::size_t>(c[j + 1] <= r) + static_cast<std::size_t>(c[std::min(j + 2, k + 1)] <= r);
            while (c[j + 1] <= r) ++j;
            write_children<Exact>(div, c, k, j, r, rout + 2 * i, kout + 2 * i);
        }
    }

    template <bool Exact>
    void split_level(const dense_level& dl, const std::uint64_t* rin, const std::uint8_t* kin, std::size_t m,
                     std::uint64_t* rout, std::uint8_t* kout) const noexcept {
        const level& l = levels_[static_cast<std::size_t>(dl.lv)];
        const std::uint64_t* prefix = l.prefix.data();
        const std::uint8_t* guide = dl.guide.data();
        const typename dense_level::row_info* rows = dl.rows.data();
        const exact_division* div = dl.div.data();
        for (std::size_t i = 0; i < m; ++i) {
            const std::size_t k = kin[i];
            const std::uint64_t r = rin[i];
            const typename dense_level::row_info ri = rows[k];
            const std::uint64_t* c = prefix + ri.row;
            std::size_t j;
            if (ri.scale != 0.0) [[likely]] {
                j = settle_split(c, guide[ri.guide + static_cast<std::size_t>(static_cast<double>(r) * ri.scale)], r);
            } else {
                j = find64(l, k, r);
            }
            write_children<Exact>(div, c, k, j, r, rout + 2 * i, kout + 2 * i);
        }
    }

    // The four-way level of the dense walk: m nodes (index rin[i], pulses
    // K at the root, else kin[i]) -> 16 int8 each at y + 16 i. Two passes
    // over the nodes, so that more of them are in flight at once (the chain
    // of one node is longer than the out-of-order window holds): (1) the
    // composition: the guide's bucket, two branch-free steps, the rare
    // loop; (2) the quarters: three divisions by V(4, .) and four P(4, k)
    // table loads (a part past the table, or a k without a table: the
    // general code).
    template <bool Root, bool Exact, class Tick>
    void quad_dense(const std::uint64_t* rin, const std::uint8_t* kin, std::size_t m, std::int8_t* y,
                    dense_workspace& ws, Tick& tick) const noexcept {
        const std::uint64_t* offsets = comp_offsets_.data();
        const std::uint32_t* comp_parts = comp_parts_.data();
        const std::uint16_t* guide = comp_guide_.data();
        const quad_row* rows = quad_rows_.data();
        const std::uint32_t root_start = rows[pulses_].start;
        const std::uint16_t* root_guide = guide + rows[pulses_].guide;
        const std::uint64_t root_mul = rows[pulses_].mul;
        std::uint64_t* rest = ws.rest.data();
        std::uint32_t* parts = ws.parts.data();
        constexpr std::uint32_t general = 0xffffffffu;  // no composition table for this node
        for (std::size_t i = 0; i < m; ++i) {
            std::uint64_t r = rin[i];
            std::uint32_t start = root_start;
            const std::uint16_t* gd = root_guide;
            std::uint64_t mul = root_mul;
            if constexpr (!Root) {
                const std::size_t k = kin[i];
                const quad_row qr = rows[k];
                mul = qr.mul;
                if (mul == 0) [[unlikely]] {
                    parts[i] = general;
                    continue;
                }
                start = qr.start;
                gd = guide + qr.guide;
            }
            const std::uint64_t* off = offsets + start;
            std::size_t c = gd[comp_bucket(mul, r)];
            // Two forward steps as one: the offsets increase, so off[c + 2] <= r
            // implies off[c + 1] <= r (both loads start at once).
            c += static_cast<std::size_t>(off[c + 1] <= r) + static_cast<std::size_t>(off[c + 2] <= r);
            while (off[c + 1] <= r) ++c;
            rest[i] = r - off[c];
            parts[i] = comp_parts[start + c];
        }
        const exact_division* rad = quad_radix_.data();
        const std::uint32_t* leaf = leaf4_.data();
        Tick local = tick;
        for (std::size_t i = 0; i < m; ++i) {
            local();
            const std::uint32_t p = parts[i];
            std::int8_t* out = y + 16 * i;
            if constexpr (!Root) {
                if (p == general) [[unlikely]] {
                    quad_general(kin[i], rin[i], out);
                    continue;
                }
            }
            std::uint64_t r = rest[i];
            const exact_division& d1 = rad[p & 0xff];
            const exact_division& d2 = rad[(p >> 8) & 0xff];
            const exact_division& d3 = rad[(p >> 16) & 0xff];
            const exact_division& d4 = rad[(p >> 24) & 0x7f];
            std::uint64_t q = exact_quotient<Exact>(d4, r);
            const std::uint64_t i4 = r - q * d4.d;
            r = q;
            q = exact_quotient<Exact>(d3, r);
            const std::uint64_t i3 = r - q * d3.d;
            r = q;
            q = exact_quotient<Exact>(d2, r);
            const std::uint64_t i2 = r - q * d2.d;
            const std::uint64_t i1 = q;
            if ((p >> 31) == 0) [[likely]] {
                const std::uint32_t w[4] = {leaf[d1.leaf + i1], leaf[d2.leaf + i2], leaf[d3.leaf + i3],
                                            leaf[d4.leaf + i4]};
                std::memcpy(out, w, 16);
            } else {
                const std::uint64_t it[4] = {i1, i2, i3, i4};
                int tmp[4];
                for (std::size_t t = 0; t < 4; ++t) {
                    unrank64(levels_[static_cast<std::size_t>(quad_level_)].left, (p >> (8 * t)) & 0x7f, it[t], tmp);
                    for (std::size_t u = 0; u < 4; ++u) out[4 * t + u] = static_cast<std::int8_t>(tmp[u]);
                }
            }
        }
        tick = local;
    }
    void quad_general(std::size_t k, std::uint64_t r, std::int8_t* out) const noexcept {
        int tmp[16];
        unrank64(quad_level_, k, r, tmp);
        for (std::size_t t = 0; t < 16; ++t) out[t] = static_cast<std::int8_t>(tmp[t]);
    }

    // Composition tables of the four-way level (if any) and the divisions by
    // V(4, k). The root of N = 16 meets only k = K; a four-way level below it
    // meets every k, tabulated while all its runs together hold at most
    // max_quad_compositions entries (k <= 22), rarer k take the prefix rows.
    static constexpr std::size_t max_quad_compositions = 16384;
    void build_quad() {
        for (std::size_t i = 0; i < levels_.size(); ++i)
            if (levels_[i].quad) quad_level_ = static_cast<int>(i);
        if (quad_level_ < 0) return;
        const level& l = levels_[static_cast<std::size_t>(quad_level_)];
        const level& four = levels_[static_cast<std::size_t>(l.left)];
        const std::uint64_t top = l.counts[pulses_ * l.limbs];  // V(16, K) < 2^64
        quad_exact_ = top - 1 < (std::uint64_t{1} << 62);
        const auto rbits = static_cast<unsigned>(std::bit_width(top - 1));
        quad_radix_.resize(pulses_ + 1);
        for (std::size_t k = 0; k <= pulses_; ++k) {
            quad_radix_[k] = reciprocal(four.counts[k * four.limbs], quad_exact_ ? rbits : 64);
            quad_radix_[k].leaf = k < leaf_k_ ? static_cast<std::uint32_t>(leaf_start_[k]) : 0;
        }
        const bool root = quad_level_ == root_;
        const auto compositions = [](std::size_t k) { return (k + 1) * (k + 2) * (k + 3) / 6; };
        quad_rows_.assign(pulses_ + 1, quad_row{});
        std::size_t total = 0;
        for (std::size_t k = root ? pulses_ : 0; k <= pulses_; ++k) {
            const std::size_t count = compositions(k);
            total += count;
            if (count > 0xffff || (!root && total > max_quad_compositions)) break;
            const std::uint64_t v = root ? top : l.counts[k * l.limbs];
            quad_rows_[k].start = static_cast<std::uint32_t>(comp_offsets_.size());
            std::uint64_t offset = 0;
            for (std::size_t a = 0; a <= k; ++a)
                for (std::size_t b = 0; a + b <= k; ++b)
                    for (std::size_t c = 0; a + b + c <= k; ++c) {
                        const std::size_t d = k - a - b - c;
                        const bool slow = std::max(std::max(a, b), std::max(c, d)) >= leaf_k_;
                        comp_offsets_.push_back(offset);
                        comp_parts_.push_back(static_cast<std::uint32_t>(a | b << 8 | c << 16 | d << 24) |
                                              static_cast<std::uint32_t>(slow) << 31);
                        offset += quad_radix_[a].d * quad_radix_[b].d * quad_radix_[c].d * quad_radix_[d].d;
                    }
            comp_offsets_.push_back(v);
            comp_offsets_.push_back(~std::uint64_t{0});
            comp_parts_.insert(comp_parts_.end(), 2, 0);
            const std::uint64_t* first = comp_offsets_.data() + quad_rows_[k].start;
            // Bucket b holds the last composition whose offset lies in an
            // earlier bucket; the bucket of r is monotone in r, so every r of
            // bucket b has a composition at or after it (only forward steps).
            const std::size_t g = 2 * count;
            const auto mul = static_cast<std::uint64_t>((static_cast<detail::uint128>(g) << 64) / v);
            quad_rows_[k].mul = mul;
            quad_rows_[k].guide = static_cast<std::uint32_t>(comp_guide_.size());
            std::size_t c = 0;
            for (std::size_t b = 0; b < g; ++b) {
                while (c + 1 < count && comp_bucket(mul, first[c + 1]) < b) ++c;
                comp_guide_.push_back(static_cast<std::uint16_t>(c));
            }
        }
    }

    // Sets up the dense walk when the configuration allows it (see dense()).
    void build_dense() {
        if (limbs() != 1 || dim_ < 8 || !std::has_single_bit(dim_) || leaf_k_ == 0 || pulses_ > 127) return;
        for (int lv = root_;; lv = levels_[static_cast<std::size_t>(lv)].left) {
            dense_levels_.push_back(lv);
            if (levels_[static_cast<std::size_t>(lv)].n == 4 || levels_[static_cast<std::size_t>(lv)].quad) break;
        }
        if (dense_levels_.back() == root_ && levels_[static_cast<std::size_t>(root_)].quad && quad_rows_[pulses_].mul == 0) {
            dense_levels_.clear();  // a root of 16 whose compositions have no table: the general path
            return;
        }
        for (std::size_t d = 0; d + 1 < dense_levels_.size(); ++d) {
            dense_level dl;
            dl.lv = dense_levels_[d];
            const level& l = levels_[static_cast<std::size_t>(dl.lv)];
            const level& right = levels_[static_cast<std::size_t>(l.right)];
            // Every index of this level is below V(n, K).
            const auto rbits = static_cast<unsigned>(std::bit_width(l.counts[pulses_ * l.limbs] - 1));
            dl.exact = rbits <= 62;
            for (std::size_t t = 0; t <= pulses_; ++t) dl.div.push_back(reciprocal(right.counts[t * right.limbs], rbits));
            if (d == 0) {  // the root's row K: a guide of forward steps only (as build_quad's)
                const std::uint64_t* c = l.row(pulses_);
                const std::size_t g = 4 * (pulses_ + 1);
                dl.root_mul = static_cast<std::uint64_t>((static_cast<detail::uint128>(g) << 64) / c[pulses_ + 1]);
                std::size_t j = 0;
                for (std::size_t b = 0; b < g; ++b) {
                    while (j < pulses_ && comp_bucket(dl.root_mul, c[j + 1]) < b) ++j;
                    dl.guide.push_back(static_cast<std::uint8_t>(j));
                }
            }
            if (d > 0) {  // the other levels: a guide per row k
                const std::size_t kg = std::min<std::size_t>(l.guide_k, pulses_ + 1);
                dl.rows.resize(pulses_ + 1);
                for (std::size_t k = 0; k <= pulses_; ++k) {
                    dl.rows[k].row = static_cast<std::uint32_t>(l.row_start[k]);
                    if (k >= kg) continue;
                    const std::uint64_t* c = l.row(k);
                    const std::size_t g = 2 * (k + 1);
                    const auto total = static_cast<double>(c[k + 1]);
                    dl.rows[k].guide = static_cast<std::uint32_t>(dl.guide.size());
                    dl.rows[k].scale = static_cast<double>(g) / total;
                    std::size_t j = 0;
                    for (std::size_t b = 0; b <= g; ++b) {  // bucket g: r * scale rounded up to G_k
                        const double lo = static_cast<double>(b) * total / static_cast<double>(g);
                        while (j < k && static_cast<double>(c[j + 1]) <= lo) ++j;
                        dl.guide.push_back(static_cast<std::uint8_t>(j));
                    }
                }
            }
            dense_.push_back(std::move(dl));
        }
        leaf_start32_.assign(leaf_start_.begin(), leaf_start_.end());
        dense_on_ = true;
    }

    // Level of size n (built bottom-up, children first); the root keeps only row K.
    // nl: the left child's size (0: n / 2). A node of 16 in a tree with
    // four-way nodes is one (left 4, right the 4|8 split of 12).
    int build(std::size_t n, bool is_root, std::size_t nl = 0) {
        const bool quad = n == detail::quad_dim && quad_;
        if (quad) nl = 4;
        if (nl == 0) nl = n / 2;
        for (std::size_t i = 0; i < levels_.size(); ++i)
            if (levels_[i].n == n && levels_[i].nl == nl && !is_root) return static_cast<int>(i);
        level l;
        l.n = n;
        l.nl = nl;
        l.quad = quad;
        l.limbs = (pvq_index_bits(n, pulses_) + 1 + 63) / 64;  // V(n, K) itself, not V - 1
        if (n >= 2) {
            l.left = build(nl, false);
            l.right = build(n - nl, false, quad ? 4 : 0);
        }
        const std::size_t lw = l.limbs, kmax = pulses_;
        l.counts.assign((kmax + 1) * lw, 0);
        if (n == 1) {
            l.counts[0] = 1;
            for (std::size_t k = 1; k <= kmax; ++k) l.counts[k * lw] = 2;
            finish(l);
            levels_.push_back(std::move(l));
            return static_cast<int>(levels_.size() - 1);
        }
        const level& a = levels_[static_cast<std::size_t>(l.left)];
        const level& b = levels_[static_cast<std::size_t>(l.right)];
        const std::size_t first_k = is_root ? kmax : 0;
        // Guides for the pulse counts a node of n meets in practice (about K n / N
        // on average): up to twice that plus 16; rarer rows binary-search.
        const std::size_t guide_k = is_root ? kmax + 1 : std::min(kmax, 2 * kmax * n / dim_ + 16) + 1;
        l.guide_k = guide_k;
        l.guide_start.assign(guide_k, 0);
        l.guide_scale.assign(guide_k, 0.0);
        l.row_start.assign(kmax + 1, 0);
        l.approx_start.assign(kmax + 1, 0);
        l.row_limbs.assign(kmax + 1, 1);
        std::vector<std::uint64_t> row((kmax + 2) * lw);
        std::array<std::uint64_t, detail::max_split_limbs> prod{};
        // Words actually used by V(nL, t) and V(nR, t): the products of small
        // counts (most of the table) take one or two word multiplications.
        std::vector<std::size_t> a_used(kmax + 1), b_used(kmax + 1);
        for (std::size_t t = 0; t <= kmax; ++t) {
            a_used[t] = detail::limbs_used(a.count(t), a.limbs);
            b_used[t] = detail::limbs_used(b.count(t), b.limbs);
        }
        l.prefix.reserve(is_root ? (kmax + 2) * lw : (kmax + 1) * (kmax + 2) / 2 * lw);
        for (std::size_t k = first_k; k <= kmax; ++k) {
            std::fill_n(row.begin(), lw, std::uint64_t{0});
            for (std::size_t t = 0; t <= k; ++t) {
                // C(t + 1) = C(t) + V(nL, t) V(nR, k - t)
                const std::size_t pw = std::min(lw, a_used[t] + b_used[k - t]);
                detail::limbs_mul(a.count(t), a_used[t], b.count(k - t), b_used[k - t], prod.data(), pw);
                const std::uint64_t* prev = row.data() + t * lw;
                std::uint64_t* cur = row.data() + (t + 1) * lw;
                unsigned char carry = 0;
                std::size_t i = 0;
                for (; i < pw; ++i) cur[i] = detail::add_carry(prev[i], prod[i], carry, carry);
                for (; i < lw; ++i) cur[i] = detail::add_carry(prev[i], 0, carry, carry);
            }
            std::copy_n(row.data() + (k + 1) * lw, lw, l.counts.data() + k * lw);
            const std::size_t w = std::max<std::size_t>(1, detail::limbs_used(row.data() + (k + 1) * lw, lw));
            l.row_limbs[k] = static_cast<std::uint8_t>(w);
            l.row_start[k] = l.prefix.size();
            for (std::size_t t = 0; t <= k + 1; ++t)
                l.prefix.insert(l.prefix.end(), row.begin() + static_cast<std::ptrdiff_t>(t * lw),
                                row.begin() + static_cast<std::ptrdiff_t>(t * lw + w));
            if (w > 1) {
                l.approx_start[k] = l.prefix_approx.size();
                for (std::size_t t = 0; t <= k + 1; ++t) l.prefix_approx.push_back(approx(row.data() + t * lw, w));
            }
            if (k < guide_k) build_guide(l, k, row.data(), lw, w);
        }
        finish(l);
        levels_.push_back(std::move(l));
        return static_cast<int>(levels_.size() - 1);
    }

    // Guide of row k: C(t) at row + t * lw, w words used (see level::guide).
    static void build_guide(level& l, std::size_t k, const std::uint64_t* row, std::size_t lw, std::size_t w) {
        const std::size_t g = 2 * (k + 1);
        const double total = approx(row + (k + 1) * lw, w);
        l.guide_start[k] = static_cast<std::uint32_t>(l.guide.size());
        l.guide_scale[k] = static_cast<double>(g) / total;
        std::size_t j = 0;
        for (std::size_t b = 0; b < g; ++b) {
            const double lo = static_cast<double>(b) * total / static_cast<double>(g);
            while (j < k && approx(row + (j + 1) * lw, w) <= lo) ++j;
            l.guide.push_back(static_cast<std::uint16_t>(j));
        }
    }

    // x (w words) * 2^(-64 (w - 1)) as a double.
    static double approx(const std::uint64_t* x, std::size_t w) noexcept {
        double v = static_cast<double>(x[w - 1]);
        if (w >= 2) v += 0x1p-64 * static_cast<double>(x[w - 2]);
        if (w >= 3) v += 0x1p-128 * static_cast<double>(x[w - 3]);  // lower words are below double precision
        return v;
    }

    void finish(level& l) const {
        l.inverse.assign(pulses_ + 1, 0.0);
        for (std::size_t k = 0; k <= pulses_; ++k) {
            const double v = approx(l.count(k), l.limbs) * std::ldexp(1.0, 64 * static_cast<int>(l.limbs - 1));
            l.inverse[k] = v > 0.0 ? 1.0 / v : 0.0;
        }
        l.norm.assign((pulses_ + 1) * l.limbs, 0);
        l.norm_shift.assign(pulses_ + 1, 0);
        l.count_words.assign(pulses_ + 1, 1);
        l.norm_recip.assign(pulses_ + 1, 0);
        for (std::size_t k = 0; k <= pulses_; ++k) {
            const std::uint64_t* d = l.count(k);
            const std::size_t u = std::max<std::size_t>(1, detail::limbs_used(d, l.limbs));
            const int sh = d[u - 1] != 0 ? std::countl_zero(d[u - 1]) : 0;  // 0: a row the root does not keep
            std::uint64_t* v = l.norm.data() + k * l.limbs;
            for (std::size_t i = u; i-- > 0;) v[i] = (d[i] << sh) | (sh != 0 && i > 0 ? d[i - 1] >> (64 - sh) : 0);
            l.norm_shift[k] = static_cast<std::uint8_t>(sh);
            l.norm_recip[k] = v[u - 1] != 0 ? detail::reciprocal_word(v[u - 1]) : 0;
            l.count_words[k] = static_cast<std::uint8_t>(u);
        }
    }

    void rank_node(int lv, std::size_t k, const int* y, std::uint64_t* out) const noexcept {
        const level& l = levels_[static_cast<std::size_t>(lv)];
        std::fill_n(out, l.limbs, std::uint64_t{0});
        if (k == 0) return;
        if (l.n == 1) {
            out[0] = y[0] < 0 ? 1 : 0;
            return;
        }
        if (l.quad) {
            out[0] = rank_quad(l, k, y);
            return;
        }
        const std::size_t nl = l.nl;
        std::size_t kl = 0;
        for (std::size_t i = 0; i < nl; ++i) kl += static_cast<std::size_t>(std::abs(y[i]));
        const level& a = levels_[static_cast<std::size_t>(l.left)];
        const level& b = levels_[static_cast<std::size_t>(l.right)];
        std::array<std::uint64_t, detail::max_split_limbs> il{}, ir{}, prod{};
        rank_node(l.left, kl, y, il.data());
        rank_node(l.right, k - kl, y + nl, ir.data());
        const std::size_t w = l.row_limbs[k];
        std::copy_n(l.row(k) + kl * w, w, out);
        detail::limbs_mul(il.data(), a.limbs, b.count(k - kl), b.limbs, prod.data(), l.limbs);
        detail::limbs_add(out, prod.data(), l.limbs);
        std::fill(ir.begin() + static_cast<std::ptrdiff_t>(b.limbs), ir.end(), std::uint64_t{0});
        detail::limbs_add(out, ir.data(), l.limbs);
    }

    // One split of a node whose row k needs w >= 2 words: j, then the halves'
    // indices q (left) and rr (right), w words each.
    void split_wide(const level& l, std::size_t k, const std::uint64_t* r, std::size_t& j, std::uint64_t* q,
                    std::uint64_t* rr) const noexcept {
        // Rows of up to 512 bits: code with the sizes fixed.
        if (detail::with_fixed_size<2, 8>(l.row_limbs[k],
                                          [&](auto w) { split_wide_fixed<decltype(w)::value>(l, k, r, j, q, rr); }))
            return;
        const std::size_t w = l.row_limbs[k];
        const std::uint64_t* c = l.row(k);
        j = guess_wide(l, k, r, w);
        while (j > 0 && detail::limbs_less(r, c + j * w, w)) --j;
        while (j < k && !detail::limbs_less(r, c + (j + 1) * w, w)) ++j;
        std::array<std::uint64_t, detail::max_split_limbs> rem;
        std::copy_n(r, w, rem.data());
        detail::limbs_sub(rem.data(), c + j * w, w);
        const level& b = levels_[static_cast<std::size_t>(l.right)];
        detail::limbs_divmod(rem.data(), w, b.count(k - j), std::min(b.limbs, w), q, w, rr);
    }

    // j from the guide (or a binary search on the double approximations of
    // row k when it has none): exact or off by a step or two.
    static std::size_t guess_wide(const level& l, std::size_t k, const std::uint64_t* r, std::size_t w) noexcept {
        const double ra = static_cast<double>(r[w - 1]) + 0x1p-64 * static_cast<double>(r[w - 2]);
        if (k < l.guide_k) return l.guide[l.guide_start[k] + l.bucket(k, ra)];
        const double* ca = l.prefix_approx.data() + l.approx_start[k];
        const double* base = ca;
        for (std::size_t len = k + 1; len > 1;) {
            const std::size_t half = len / 2;
            base = base[half] <= ra ? base + half : base;
            len -= half;
        }
        return static_cast<std::size_t>(base - ca);
    }

    // split_wide for a row of W words: branch-free compares and subtraction,
    // division by the pre-normalised divisor with its precomputed reciprocal.
    template <std::size_t W>
    void split_wide_fixed(const level& l, std::size_t k, const std::uint64_t* r, std::size_t& jout, std::uint64_t* q,
                          std::uint64_t* rr) const noexcept {
        const std::uint64_t* c = l.row(k);
        std::size_t j = guess_wide(l, k, r, W);
        // One step each way without branches, then the rare longer walks.
        j -= static_cast<std::size_t>(j > 0 && detail::fixed_less<W>(r, c + j * W));
        j += static_cast<std::size_t>(j < k && !detail::fixed_less<W>(r, c + (j + 1) * W));
        while (j > 0 && detail::fixed_less<W>(r, c + j * W)) --j;
        while (j < k && !detail::fixed_less<W>(r, c + (j + 1) * W)) ++j;
        jout = j;
        std::uint64_t rem[W];
        unsigned char borrow = 0;
        for (std::size_t i = 0; i < W; ++i) rem[i] = detail::sub_borrow(r[i], c[j * W + i], borrow, borrow);
        const level& b = levels_[static_cast<std::size_t>(l.right)];
        const std::size_t t = k - j;
        const std::uint64_t* vn = b.norm.data() + t * b.limbs;
        const int sh = b.norm_shift[t];
        const std::uint64_t v = b.norm_recip[t];
        if (detail::with_fixed_size<1, W>(
                b.count_words[t], [&](auto d) { detail::divmod_normalized<W, decltype(d)::value>(rem, W, vn, decltype(d)::value, sh, v, q, rr); }))
            return;
        detail::limbs_divmod(rem, W, b.count(t), std::min(b.limbs, W), q, W, rr);  // not reached: words <= W
    }

    // Queues node (lv, k, r) (r: at least the words of V(n, k)): on `wide` when
    // its row needs more than one word, else on its level's 64-bit segment;
    // nodes without pulses are dropped (the output is zero already).
    void queue(unrank_workspace& ws, std::vector<unrank_workspace::wide_task>& wide, int lv, std::size_t k,
               const std::uint64_t* r, std::uint32_t y) const {
        if (k == 0) return;
        const level& l = levels_[static_cast<std::size_t>(lv)];
        if (l.n == 1 || l.row_limbs[k] == 1) {
            const auto i = static_cast<std::size_t>(lv);
            ws.narrow[ws.start[i] + ws.fill[i]++] = {r[0], y, static_cast<std::uint32_t>(k)};
        } else {
            auto& t = wide.emplace_back();
            t.lv = lv;
            t.k = static_cast<std::uint32_t>(k);
            t.y = y;
            std::copy_n(r, l.row_limbs[k], t.r.data());
        }
    }

    // Tables of all points of P(4, k) and P(8, k) for small k, in split order,
    // one int8 per coordinate. A point of P(2m, k) with j pulses on the left is
    // the concatenation of a point of P(m, j) and one of P(m, k - j), in the
    // order (j, left index, right index): the tables are built by
    // concatenating the smaller ones (pairs in closed form), no unranking.
    //   P(4, k): k <= 15 (39,041 entries, 156 kB); k <= 23 (204,609 entries,
    //     818 kB) where nodes of 4 hold more than 8 pulses on average
    //     (4 K / N > 8: about 4 bpw at N = 128), so that few fall back to pairs;
    //     k <= 10 (8,361 entries, 33 kB) where they hold at most 3 (4 K / N <= 3);
    //   P(8, k): k <= 6 (40,081 entries, 313 kB), only where nodes of 8 hold
    //     few pulses on average (8 K / N <= 6: about 2 bpw at N = 128; at 3 bpw
    //     they hold ~11 and the table would serve few of them).
    static constexpr std::size_t leaf8_pulses = 6;
    void build_leaves() {
        const auto has_level = [&](std::size_t n) {
            for (std::size_t i = 0; i < levels_.size(); ++i)
                if (levels_[i].n == n && static_cast<int>(i) != root_ && nodes_[i] > 0) return true;
            return false;
        };
        if (!has_level(4)) return;
        const std::size_t leaf_pulses = 4 * pulses_ > 8 * dim_ ? 23 : (4 * pulses_ <= 3 * dim_ ? 10 : 15);
        const std::size_t kmax = std::min(leaf_pulses, pulses_);
        // Points packed 8 bits per coordinate, lowest coordinate in the low byte.
        using table = std::vector<std::vector<std::uint64_t>>;
        table p2(kmax + 1), p4(kmax + 1);
        p2[0].push_back(0);
        int y[2];
        for (std::size_t k = 1; k <= kmax; ++k)
            for (std::uint64_t r = 0; r < 4 * k; ++r) {
                unrank2(k, r, y);
                p2[k].push_back(pack8(y[0]) | pack8(y[1]) << 8);
            }
        // Entries of P(2m, k) from the half table (to reserve once: the tables
        // are large enough for regrowth to show in construction time).
        const auto entries = [](const table& half, std::size_t k) {
            std::size_t e = 0;
            for (std::size_t j = 0; j <= k; ++j) e += half[j].size() * half[k - j].size();
            return e;
        };
        const auto concat = [](const table& half, std::size_t k, unsigned shift, std::vector<std::uint64_t>& out) {
            for (std::size_t j = 0; j <= k; ++j)
                for (const std::uint64_t a : half[j])
                    for (const std::uint64_t b : half[k - j]) out.push_back(a | b << shift);
        };
        leaf_start_.assign(leaf_pulses + 1, 0);
        std::size_t total = 0;
        for (std::size_t k = 0; k <= kmax; ++k) total += entries(p2, k);
        leaf4_.clear();
        leaf4_.reserve(total);
        for (std::size_t k = 0; k <= kmax; ++k) {
            p4[k].reserve(entries(p2, k));
            concat(p2, k, 16, p4[k]);
            leaf_start_[k] = leaf4_.size();
            for (const std::uint64_t p : p4[k]) leaf4_.push_back(static_cast<std::uint32_t>(p));
        }
        leaf_k_ = kmax + 1;
        if (!has_level(8) || 8 * pulses_ > leaf8_pulses * dim_) return;
        const std::size_t kmax8 = std::min(leaf8_pulses, pulses_);
        leaf8_start_.assign(leaf8_pulses + 1, 0);
        total = 0;
        for (std::size_t k = 0; k <= kmax8; ++k) total += entries(p4, k);
        leaf8_.clear();
        leaf8_.reserve(total);
        for (std::size_t k = 0; k <= kmax8; ++k) {
            leaf8_start_[k] = leaf8_.size();
            concat(p4, k, 32, leaf8_);
        }
        leaf8_k_ = kmax8 + 1;
    }
    static std::uint64_t pack8(int v) noexcept { return static_cast<std::uint8_t>(static_cast<std::int8_t>(v)); }

    std::vector<std::uint32_t> leaf4_;
    std::size_t leaf_k_ = 0;  // the table serves k < leaf_k_ (0 while it is built)
    std::vector<std::size_t> leaf_start_;
    std::vector<std::uint64_t> leaf8_;
    std::size_t leaf8_k_ = 0;  // 0: no P(8, k) table
    std::vector<std::size_t> leaf8_start_;
    std::size_t dim_ = 0;
    std::size_t pulses_ = 0;
    std::size_t index_bits_ = 0;
    std::vector<level> levels_;
    bool dense_on_ = false;
    std::vector<int> dense_levels_;   // root, its left child, ..., the level of n = 4
    std::vector<dense_level> dense_;  // the split levels of dense_levels_ (all but the last)
    std::vector<std::uint32_t> leaf_start32_;
    std::vector<std::size_t> nodes_;  // level -> nodes of that size in one tree
    int root_ = -1;
    // Four-way nodes of 16 (build_quad).
    bool quad_ = false;        // this tree's nodes of 16 split four ways
    bool quad_exact_ = true;   // exact_division's multiply-high is exact (V(16, K) <= 2^62)
    int quad_level_ = -1;      // their level
    std::vector<std::uint64_t> comp_offsets_;
    std::vector<std::uint32_t> comp_parts_;
    std::vector<std::uint16_t> comp_guide_;
    std::vector<quad_row> quad_rows_;  // k -> its compositions' table
    std::vector<exact_division> quad_radix_;
};

}  // namespace svq
