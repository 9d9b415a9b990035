// The dense walk of pvq_split_index (the speed configurations, index in one
// word) with groups side by side in SIMD lanes: 8 groups per AVX-512
// instruction stream (64-bit lanes; AVX2 measured slower: off) (docs/performance.md,
// "Speed configurations", "Groups in SIMD lanes").
//
//   dense_lane_decoder lanes(ix);        // tables built from ix (holds no pointer to it)
//   if (lanes.enabled()) lanes.unrank(ix, index, count, y8, ws);   // == ix.unrank_dense, byte for byte
//
// Layout: the nodes of one depth sit in a flat array, planar: a node at
// position p of a depth with m nodes puts its left child at p and its right
// child at m + p, so every load and store of a level is contiguous (a node's
// slot is g + G code, code = its path from the root, first step lowest bit).
// Each node holds (k << 56) | r. Per level and per 8 nodes:
//   bucket  floor(r * B / V(n, k)) + k (B + 1): one gather of B / V(n, k);
//   j       guide entries of that bucket (three gathers: j with C(j), C(j + 1),
//           C(j + 2)): j or j + 1 by one compare, checked exactly by
//           C(j) <= r < C(j + 2); a lane that fails (the bucket holds two
//           boundaries, or floating rounding) is redone by the scalar code;
//   q       r - C(j) divided by V(nR, k - j) (one gather of the divisor, one of
//           its double reciprocal): a double estimate, off by at most one since
//           q < 2^44, corrected with the 64-bit remainder.
// The last level (nodes of 8) looks both halves up in the table of all points
// of P(4, k) (two gathers of 64-bit words, one for the offset of P(4, j)) and
// writes the 8 int8 of the node in one word; a final pass puts the words in
// group order. The root reads the indices as they are (up to 63 bits; its j
// comes from a separate gather). Groups are padded to a multiple of the lane
// count with index 0 (the tail), so no level has a partial vector.
#pragma once

#include <svq/error.hpp>
#include <svq/kernels/split_index.hpp>
#include <svq/simd/compat.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

namespace svq {

namespace detail {

// Architectures the lane walk is enabled for: AVX-512 with DQ (8 lanes, the
// 64-bit multiply in one instruction). The body is generic and compiles for
// AVX2 (4 lanes, the multiply emulated), but there it measured slower than the
// scalar walk (unrank alone 0.47-0.54 against 0.75-0.85 Gw/s), so it is off.
template <class Arch>
inline constexpr bool lane_walk_arch = std::is_base_of_v<xsimd::avx512dq, Arch>;

}  // namespace detail

class dense_lane_decoder {
public:
    struct workspace {
        std::vector<std::int64_t> level[2];       // packed nodes of one depth
        std::vector<std::uint64_t> words;         // last level: 8 int8 per node of 8, planar
        pvq_split_index::dense_workspace scalar;  // when not enabled(): the scalar walk
    };

    dense_lane_decoder() = default;
    // Tables for ix; enabled() is false when ix is not dense, the build has no
    // suitable SIMD, or a bound of the packing (see build) fails.
    explicit dense_lane_decoder(const pvq_split_index& ix) {
        if constexpr (detail::lane_walk_arch<simd::default_arch>) build(ix);
    }

    bool enabled() const noexcept { return on_; }
    // Groups per vector (0 when not enabled).
    std::size_t lanes() const noexcept {
        return on_ ? simd::lanes_of<std::int64_t>() : 0;
    }
    std::size_t table_bytes() const noexcept {
        std::size_t b = 8 * leaf_pairs_.size() + 8 * start_.size();
        for (const level_tables& t : levels_)
            b += 8 * (t.scale.size() + t.ga.size() + t.gj.size() + t.gb.size() + t.ge.size() + t.dpack.size() +
                      t.inv.size());
        return b;
    }

    // count indices (one word each, < V(N, K), unchecked) -> count points as
    // int8 (point g at y + g * dim()): the same bytes as
    // pvq_split_index::unrank_dense. ix: the index the decoder was built
    // from (ix.dense()); when not enabled(), ix.unrank_dense itself.
    void unrank(const pvq_split_index& ix, const std::uint64_t* index, std::size_t count, std::int8_t* y,
                workspace& ws) const {
        if constexpr (detail::lane_walk_arch<simd::default_arch>) {
            if (on_) {
                if (count != 0) run(simd::default_arch{}, ix, index, count, y, ws);
                return;
            }
        }
        ix.unrank_dense(index, count, y, ws.scalar);
    }

private:
    static constexpr int k_shift = 56;  // a node: (k << 56) | r, r < 2^56
    static constexpr std::int64_t r_mask = (std::int64_t{1} << k_shift) - 1;
    static constexpr int d_bits = 44;  // dpack: V(nR, t) | start(t) << 44
    static constexpr std::int64_t d_mask = (std::int64_t{1} << d_bits) - 1;

    // One split level. Guide: rows k = 0..K (the root: row K only, at row 0)
    // of B + 1 buckets each; bucket b of row k at k (B + 1) + b.
    struct level_tables {
        int lv = -1;
        bool root = false, last = false;
        double stride = 0.0;        // B + 1
        std::vector<double> scale;  // k -> B / V(n, k)
        // Integer tables are stored as the bit patterns of doubles (see bits_table).
        std::vector<double> ga;      // (j << 56) | C(j) (the root: C(j))
        std::vector<double> gj;      // the root: j
        std::vector<double> gb, ge;  // C(j + 1), C(j + 2) (C(k + 1) where j + 2 > k + 1)
        std::vector<double> dpack;   // t -> V(nR, t), with start(t) << 44 on the last level
        std::vector<double> inv;     // t -> 1 / V(nR, t)
    };

    void build(const pvq_split_index& ix) {
        if (!ix.dense() || ix.leaf4_pulses() == 0) return;
        const auto& lv = ix.levels();
        const std::size_t K = ix.pulses();
        // Nodes of 4 holding more than 8 pulses on average (4 K / N > 8: ~4 bpw
        // at N = 16) often pass the P(4, k) table, and each such lane is redone
        // by the scalar code: measured slower than the scalar walk (N = 16,
        // K = 46), so those configurations keep it.
        if (4 * K > 8 * ix.dim()) return;
        std::vector<int> chain;  // root, its left child, ..., the level of 8
        for (int l = ix.root(); lv[static_cast<std::size_t>(l)].n > 4; l = lv[static_cast<std::size_t>(l)].left)
            chain.push_back(l);
        const std::size_t B = 2 * (K + 1);
        const std::uint64_t c_limit = std::uint64_t{1} << k_shift;
        const std::uint64_t d_limit = std::uint64_t{1} << d_bits;
        for (std::size_t d = 0; d < chain.size(); ++d) {
            level_tables t;
            t.lv = chain[d];
            t.root = d == 0;
            t.last = d + 1 == chain.size();
            const auto& l = lv[static_cast<std::size_t>(t.lv)];
            const auto& right = lv[static_cast<std::size_t>(l.right)];
            if (!t.root && l.counts[K * l.limbs] >= c_limit) return levels_.clear();  // r must fit below the k field
            t.stride = static_cast<double>(B + 1);
            const std::size_t k0 = t.root ? K : 0;
            for (std::size_t k = k0; k <= K; ++k) {
                const std::uint64_t* c = l.row(k);
                const std::uint64_t v = c[k + 1];
                t.scale.push_back(static_cast<double>(B) / static_cast<double>(v));
                std::size_t j = 0;
                for (std::size_t b = 0; b <= B; ++b) {
                    const double lo = static_cast<double>(b) * static_cast<double>(v) / static_cast<double>(B);
                    while (j < k && static_cast<double>(c[j + 1]) <= lo) ++j;
                    const auto cj = static_cast<std::int64_t>(c[j]);
                    t.ga.push_back(bits(t.root ? cj : static_cast<std::int64_t>(j) << k_shift | cj));
                    if (t.root) t.gj.push_back(bits(static_cast<std::int64_t>(j)));
                    t.gb.push_back(bits(static_cast<std::int64_t>(c[j + 1])));
                    t.ge.push_back(bits(static_cast<std::int64_t>(j + 2 <= k + 1 ? c[j + 2] : c[k + 1])));
                }
            }
            for (std::size_t u = 0; u <= K; ++u) {
                const std::uint64_t dv = right.counts[u * right.limbs];
                if (dv >= d_limit) return levels_.clear();  // off: no tables kept (table_bytes() 0)
                std::int64_t p = static_cast<std::int64_t>(dv);
                if (t.last && u < ix.leaf4_pulses()) p |= static_cast<std::int64_t>(ix.leaf4_start()[u]) << d_bits;
                t.dpack.push_back(bits(p));
                t.inv.push_back(1.0 / static_cast<double>(dv));
            }
            levels_.push_back(std::move(t));
        }
        // The leaf table as 64-bit words (entry e in the half e & 1 of word e / 2), one spare word.
        const std::span<const std::uint32_t> leaf = ix.leaf4_table();
        leaf_pairs_.assign(leaf.size() / 2 + 1, 0.0);
        for (std::size_t e = 0; e < leaf.size(); e += 2) {
            const std::uint64_t hi = e + 1 < leaf.size() ? leaf[e + 1] : 0;
            leaf_pairs_[e / 2] = bits(static_cast<std::int64_t>(leaf[e] | hi << 32));
        }
        start_.assign(K + 1, 0.0);
        for (std::size_t u = 0; u <= K && u < ix.leaf4_pulses(); ++u)
            start_[u] = bits(static_cast<std::int64_t>(ix.leaf4_start()[u]));
        leaf_k_ = static_cast<std::int64_t>(ix.leaf4_pulses());
        level8_ = chain.back();
        on_ = true;
    }

    // Tables hold their 64-bit words as the bit patterns of doubles, read by
    // the hardware double gather: xsimd 8.1's batch::gather never reaches its
    // own AVX2 / AVX-512 overloads (it calls kernel::gather<A, T> with
    // explicit arguments those overloads do not take, and their integer
    // versions carry an enable_if of type void) and falls back to one load
    // and one insert per lane, slower than the scalar walk. So the gather is
    // the intrinsic where the architecture has it, xsimd's otherwise.
    static double bits(std::int64_t v) noexcept { return std::bit_cast<double>(v); }
    template <class Arch>
    static xsimd::batch<std::int64_t, Arch> gather_bits(const double* table,
                                                        const xsimd::batch<std::int64_t, Arch>& index) noexcept {
        using db = xsimd::batch<double, Arch>;
#if defined(__AVX512F__)
        if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>)
            return simd::bitwise_cast<std::int64_t>(db(_mm512_i64gather_pd(index, table, 8)));
        else
#endif
#if defined(__AVX2__)
            if constexpr (std::is_base_of_v<xsimd::avx2, Arch>)
            return simd::bitwise_cast<std::int64_t>(db(_mm256_i64gather_pd(table, index, 8)));
        else
#endif
            return simd::bitwise_cast<std::int64_t>(db::gather(table, index));
    }

    // Scalar split of one node (the lanes a vector could not settle).
    static void split_scalar(const pvq_split_index& ix, const level_tables& t, std::size_t k, std::uint64_t r,
                             std::size_t& j, std::uint64_t& q, std::uint64_t& rem) noexcept {
        const auto& l = ix.levels()[static_cast<std::size_t>(t.lv)];
        j = pvq_split_index::find64(l, k, r);
        r -= l.row(k)[j];
        const auto& right = ix.levels()[static_cast<std::size_t>(l.right)];
        const std::uint64_t d = right.counts[(k - j) * right.limbs];
        q = r / d;
        rem = r - q * d;
    }

    // The 8 int8 of a node of 8 (k pulses, index r), lowest coordinate in the low byte.
    std::uint64_t leaf8_scalar(const pvq_split_index& ix, std::size_t k, std::uint64_t r) const noexcept {
        int y[8];
        ix.unrank64(level8_, k, r, y);
        std::uint64_t w = 0;
        for (int i = 0; i < 8; ++i)
            w |= std::uint64_t{static_cast<std::uint8_t>(static_cast<std::int8_t>(y[i]))} << (8 * i);
        return w;
    }

    template <class Arch>
    void run(Arch, const pvq_split_index& ix, const std::uint64_t* index, std::size_t count, std::int8_t* y,
             workspace& ws) const {
        constexpr std::size_t W = xsimd::batch<std::int64_t, Arch>::size;
        const std::size_t gp = (count + W - 1) / W * W;
        const std::size_t depth = levels_.size();
        const std::size_t nodes8 = gp << (depth - 1);  // nodes of 8 in all
        for (auto& v : ws.level)
            if (v.size() < nodes8) v.resize(nodes8);
        if (ws.words.size() < nodes8) ws.words.resize(nodes8);
        std::int64_t* in = ws.level[0].data();
        for (std::size_t g = 0; g < gp; ++g) in[g] = g < count ? static_cast<std::int64_t>(index[g]) : 0;
        std::size_t m = gp;
        int cur = 1;
        for (std::size_t d = 0; d < depth; ++d, m *= 2) {
            const level_tables& t = levels_[d];
            std::int64_t* out = ws.level[cur].data();
            if (t.last) {
                if (t.root)
                    split_lanes<Arch, true, true>(ix, t, in, m, nullptr, ws.words.data());
                else
                    split_lanes<Arch, false, true>(ix, t, in, m, nullptr, ws.words.data());
                break;
            }
            if (t.root)
                split_lanes<Arch, true, false>(ix, t, in, m, out, nullptr);
            else
                split_lanes<Arch, false, false>(ix, t, in, m, out, nullptr);
            in = out;
            cur ^= 1;
        }
        // Planar (slot g + gp code) -> group order (group g, node bitrev(code)).
        const std::size_t per = std::size_t{1} << (depth - 1);
        const int bits = static_cast<int>(depth - 1);
        const std::uint64_t* w = ws.words.data();
        for (std::size_t code = 0; code < per; ++code) {
            std::size_t rev = 0;
            for (int b = 0; b < bits; ++b) rev |= ((code >> b) & 1) << (bits - 1 - b);
            const std::uint64_t* src = w + code * gp;
            std::int8_t* dst = y + 8 * rev;
            for (std::size_t g = 0; g < count; ++g) std::memcpy(dst + 8 * per * g, src + g, 8);
        }
    }

    // GCC 12's AVX-512 intrinsics (gathers, conversions) trip -Wmaybe-uninitialized
    // when inlined (GCC bug 105593, as in simd/compat.hpp); the values are never read.
    SVQ_GCC_AVX512_WARNINGS_OFF
    // Nonnegative integers below 2^52 <-> doubles, exactly (the exponent trick:
    // no 64-bit conversion instruction needed before AVX-512 DQ).
    template <class Arch>
    static xsimd::batch<double, Arch> small_to_double(const xsimd::batch<std::int64_t, Arch>& x) noexcept {
        using ib = xsimd::batch<std::int64_t, Arch>;
        using db = xsimd::batch<double, Arch>;
        return simd::bitwise_cast<double>(x | ib(std::int64_t{0x4330000000000000})) - db(0x1p52);
    }
    template <class Arch>
    static xsimd::batch<std::int64_t, Arch> floor_to_int(const xsimd::batch<double, Arch>& x) noexcept {
        using ib = xsimd::batch<std::int64_t, Arch>;
        using db = xsimd::batch<double, Arch>;
        return simd::bitwise_cast<std::int64_t>(xsimd::floor(x) + db(0x1p52)) - ib(std::int64_t{0x4330000000000000});
    }

    // One level over m nodes (m a multiple of the lanes): in (m packed nodes;
    // the root: m indices) -> out (left children at [0, m), right at [m, 2m)),
    // or, on the last level, words (m words of 8 int8).
    template <class Arch, bool Root, bool Last>
    void split_lanes(const pvq_split_index& ix, const level_tables& t, const std::int64_t* in, std::size_t m,
                     std::int64_t* out, std::uint64_t* words) const noexcept {
        using ib = xsimd::batch<std::int64_t, Arch>;
        using db = xsimd::batch<double, Arch>;
        constexpr std::size_t W = ib::size;
        const ib zero(std::int64_t{0}), one(std::int64_t{1}), rmask(r_mask), dmask(d_mask);
        const ib kroot(static_cast<std::int64_t>(ix.pulses()));
        const db stride(t.stride), root_scale(t.scale[0]);
        const ib leaf_k(leaf_k_), low32(std::int64_t{0xffffffff});
        for (std::size_t i = 0; i < m; i += W) {
            const ib x = ib::load_unaligned(in + i);
            ib k, r;
            db pos;
            if constexpr (Root) {
                k = kroot;
                r = x;
                pos = xsimd::batch_cast<double>(r) * root_scale;
            } else {
                k = x >> k_shift;
                r = x & rmask;
                pos = xsimd::fma(small_to_double(r), simd::bitwise_cast<double>(gather_bits(t.scale.data(), k)),
                                 small_to_double(k) * stride);
            }
            const ib p = floor_to_int(pos);
            const ib a = gather_bits(t.ga.data(), p);
            const ib cb = gather_bits(t.gb.data(), p);
            const ib ce = gather_bits(t.ge.data(), p);
            ib jg, c0;
            if constexpr (Root) {
                jg = gather_bits(t.gj.data(), p);
                c0 = a;
            } else {
                jg = a >> k_shift;
                c0 = a & rmask;
            }
            const auto step = cb <= r;
            auto ok = (c0 <= r) & (r < ce);
            const ib j = jg + xsimd::select(step, one, zero);
            const ib r2 = r - xsimd::select(step, cb, c0);
            const ib u = k - j;  // 0 <= u <= K even in a lane that failed (j <= k by the guide)
            const ib dp = gather_bits(t.dpack.data(), u);
            const ib dv = dp & dmask;
            const db r2d = Root ? xsimd::batch_cast<double>(r2) : small_to_double(r2);
            ib q = floor_to_int(r2d * simd::bitwise_cast<double>(gather_bits(t.inv.data(), u)));
            q = xsimd::select(ok, q, zero);  // a failed lane may hold any estimate
            ib rem = r2 - q * dv;
            const auto low = rem < zero, high = rem >= dv;
            q = q + xsimd::select(high, one, zero) - xsimd::select(low, one, zero);
            rem = rem - xsimd::select(high, dv, zero) + xsimd::select(low, dv, zero);
            if constexpr (Last) {
                ok = ok & (j < leaf_k) & (u < leaf_k);
                const ib li = xsimd::select(ok, gather_bits(start_.data(), j) + q, zero);
                const ib ri = xsimd::select(ok, (dp >> d_bits) + rem, zero);
                const ib lw = gather_bits(leaf_pairs_.data(), li >> 1);
                const ib rw = gather_bits(leaf_pairs_.data(), ri >> 1);
                const ib lv = (lw >> ((li & one) << 5)) & low32;
                const ib rv = (rw >> ((ri & one) << 5)) & low32;
                (lv | (rv << 32)).store_unaligned(reinterpret_cast<std::int64_t*>(words + i));
            } else {
                ((j << k_shift) | q).store_unaligned(out + i);
                ((u << k_shift) | rem).store_unaligned(out + m + i);
            }
            if (!xsimd::all(ok)) [[unlikely]] {
                alignas(64) std::int64_t okl[W];
                xsimd::select(ok, one, zero).store_unaligned(okl);
                for (std::size_t e = 0; e < W; ++e) {
                    if (okl[e] != 0) continue;
                    const auto xe = static_cast<std::uint64_t>(in[i + e]);
                    const std::size_t ke = Root ? ix.pulses() : static_cast<std::size_t>(xe >> k_shift);
                    const std::uint64_t re = Root ? xe : xe & static_cast<std::uint64_t>(r_mask);
                    if constexpr (Last) {
                        words[i + e] = leaf8_scalar(ix, ke, re);
                    } else {
                        std::size_t je;
                        std::uint64_t qe, reme;
                        split_scalar(ix, t, ke, re, je, qe, reme);
                        out[i + e] = static_cast<std::int64_t>(je << k_shift | qe);
                        out[m + i + e] = static_cast<std::int64_t>((ke - je) << k_shift | reme);
                    }
                }
            }
        }
    }
    SVQ_GCC_AVX512_WARNINGS_ON

    bool on_ = false;
    std::vector<level_tables> levels_;  // root first, the level of 8 last
    std::vector<double> leaf_pairs_;    // pvq_split_index's P(4, k) table, two entries per word (bits)
    std::vector<double> start_;         // k -> first entry of P(4, k) (0 past the table; bits)
    std::int64_t leaf_k_ = 0;
    int level8_ = -1;
};

}  // namespace svq
