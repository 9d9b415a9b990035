// Split-order index (format/split_index.hpp) and the fast matrix kernels
// (kernels/gemv.hpp): bijection, table-driven coder against the plain
// definition, dequantize bit for bit, gemv against a float GEMV.
#include "catch.hpp"
#include "support.hpp"

#include <common/synthetic.hpp>

#include <svq/kernels/gemv.hpp>
#include <svq/format/split_index.hpp>

#include "oracle/split_lattice.hpp"
#include <svq/matrix/auto_config.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/pvq/count.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <thread>
#include <vector>

namespace {

// Uniform random index below V(N, K), as limbs words.
std::vector<std::uint64_t> random_index(const svq::pvq_split_index& ix, std::mt19937_64& rng) {
    std::vector<std::uint64_t> w(ix.limbs());
    for (;;) {
        for (std::size_t t = 0; t < w.size(); ++t) {
            const std::size_t bits = std::min<std::size_t>(64, ix.index_bits() - std::min(ix.index_bits(), 64 * t));
            w[t] = bits == 0 ? 0 : (bits == 64 ? rng() : rng() & ((std::uint64_t{1} << bits) - 1));
        }
        if (ix.in_range(w.data())) return w;
    }
}

bool valid_point(const std::vector<int>& y, std::size_t k) {
    long long total = 0;
    for (int v : y) total += std::abs(v);
    return total == static_cast<long long>(k);
}

// Fast (tables) vs plain definition on `count` random indices, and rank(unrank(i)) == i.
template <class Index>
void check_against_definition(std::size_t n, std::size_t k, int count, std::uint64_t seed) {
    const svq::pvq_split_index fast(n, k);
    const svq::oracle::pvq_split_lattice<Index> plain(n, k);
    REQUIRE(svq::detail::index_from_limbs<Index>(fast.size_limbs(), fast.limbs()) == plain.size());
    REQUIRE(plain.size() == svq::pvq_count<Index>(n, k));
    std::mt19937_64 rng(seed);
    std::vector<int> a(n), b(n);
    int mismatches = 0;
    for (int i = 0; i < count; ++i) {
        const std::vector<std::uint64_t> w = random_index(fast, rng);
        const Index index = svq::detail::index_from_limbs<Index>(w.data(), w.size());
        fast.unrank(w.data(), a.data());
        plain.unrank(index, b);
        mismatches += a != b;
        std::vector<std::uint64_t> back(fast.limbs());
        fast.rank(a.data(), back.data());
        mismatches += back != w;
        mismatches += plain.rank(a) != index;
        mismatches += !valid_point(a, k);
    }
    INFO("N = " << n << " K = " << k);
    REQUIRE(mismatches == 0);
}

using svq::test::explicit_config;

// dec.dequantize with one thread and with two, each equal to ref bit for bit.
void require_dequantize_equals(const svq::matrix_decoder& dec, const std::vector<float>& ref) {
    std::vector<float> one(ref.size(), -1.0f), two(ref.size(), -2.0f);
    dec.dequantize(one);
    dec.dequantize(two, 2);
    REQUIRE(std::memcmp(one.data(), ref.data(), ref.size() * sizeof(float)) == 0);
    REQUIRE(std::memcmp(two.data(), ref.data(), ref.size() * sizeof(float)) == 0);
}

// The largest |y - W x| / sum_i |w_i x_i| over `vectors` products y (vector
// v at v * rows) against W x in double, W = wq; a NaN in y counts as infinite.
double relative_gemv_error(const std::vector<float>& y, const std::vector<float>& wq, const std::vector<float>& x,
                           std::size_t rows, std::size_t cols, std::size_t vectors) {
    double worst = 0.0;
    for (std::size_t v = 0; v < vectors; ++v) {
        for (std::size_t r = 0; r < rows; ++r) {
            double e = 0.0, scale = 0.0;
            for (std::size_t i = 0; i < cols; ++i) {
                e += static_cast<double>(wq[r * cols + i]) * x[v * cols + i];
                scale += std::abs(static_cast<double>(wq[r * cols + i]) * x[v * cols + i]);
            }
            const double rel = std::abs(y[v * rows + r] - e) / scale;
            if (!(rel <= worst)) worst = std::isnan(rel) ? std::numeric_limits<double>::infinity() : rel;
        }
    }
    return worst;
}

// q with every index bit of row `row`, full group `group` set: an index at or
// above V(N, K) wherever V(N, K) < 2^index_bits - 1 (the layout: the row
// scale, then index and gain code per group).
svq::quantized_matrix with_index_bits_set(const svq::quantized_matrix& q, std::size_t row, std::size_t group) {
    const svq::matrix_layout& l = q.layout();
    std::vector<std::uint64_t> words(q.words().begin(), q.words().end());
    const std::size_t first = l.row_bit_offset(row) + l.row_scale_bits + group * (l.index_bits + l.gain_bits);
    for (std::size_t b = first; b < first + l.index_bits; ++b) words[b / 64] |= std::uint64_t{1} << (b % 64);
    return svq::quantized_matrix(l.rows, l.cols, q.config(), q.reference_scale(), words);
}

// gemv of `vectors` vectors one at a time, batched, and batched on two
// threads: the three bit-identical (the same operations per vector). Returns
// the largest |y - W x| / sum_i |w_i x_i| against W x in double, W = wq.
double checked_gemv_error(const svq::matrix_decoder& dec, const std::vector<float>& wq, const std::vector<float>& x,
                          std::size_t rows, std::size_t cols, std::size_t vectors) {
    std::vector<float> ys(vectors * rows), yb(vectors * rows), yt(vectors * rows);
    for (std::size_t v = 0; v < vectors; ++v)
        dec.gemv(std::span<const float>(x.data() + v * cols, cols), std::span<float>(ys.data() + v * rows, rows));
    dec.gemv_batch(x, yb, vectors);
    dec.gemv_batch(x, yt, vectors, 2);
    REQUIRE(yb == ys);
    REQUIRE(yt == ys);
    return relative_gemv_error(ys, wq, x, rows, cols, vectors);
}

}  // namespace

TEST_CASE("split order is a bijection for every N <= 6, K <= 7 (exhaustive)") {
    for (std::size_t n = 1; n <= 6; ++n) {
        for (std::size_t k = 1; k <= 7; ++k) {
            const svq::oracle::pvq_split_lattice<std::uint64_t> plain(n, k);
            const svq::pvq_split_index fast(n, k);
            std::set<std::vector<int>> seen;
            std::vector<int> y(n), z(n);
            for (std::uint64_t i = 0; i < plain.size(); ++i) {
                plain.unrank(i, y);
                REQUIRE(valid_point(y, k));
                REQUIRE(plain.rank(y) == i);
                std::array<std::uint64_t, svq::detail::max_split_limbs> in{}, back{};
                in[0] = i;
                fast.unrank(in.data(), z.data());
                REQUIRE(z == y);
                fast.rank(y.data(), back.data());
                REQUIRE(back[0] == i);
                seen.insert(y);
            }
            REQUIRE(seen.size() == plain.size());
            REQUIRE(plain.size() == svq::pvq_count<std::uint64_t>(n, k));
        }
    }
}

TEST_CASE("split order: left pulses ascending, then mixed radix (left, right)") {
    // N = 2, K = 2: j = 0: (0, 2), (0, -2); j = 1: (1, 1), (1, -1), (-1, 1), (-1, -1); j = 2: (2, 0), (-2, 0).
    const svq::oracle::pvq_split_lattice<std::uint64_t> plain(2, 2);
    const std::vector<std::vector<int>> expected = {{0, 2},  {0, -2},  {1, 1}, {1, -1},
                                                    {-1, 1}, {-1, -1}, {2, 0}, {-2, 0}};
    std::vector<int> y(2);
    for (std::uint64_t i = 0; i < 8; ++i) {
        plain.unrank(i, y);
        REQUIRE(y == expected[i]);
    }
}

TEST_CASE("table-driven split index == the plain definition on random indices") {
    check_against_definition<std::uint64_t>(8, 16, 20000, 1);
    check_against_definition<std::uint64_t>(16, 27, 20000, 2);
    check_against_definition<std::uint64_t>(7, 30, 20000, 3);
    check_against_definition<svq::wide_uint<128>>(32, 50, 5000, 4);
    check_against_definition<svq::wide_uint<256>>(100, 70, 1000, 5);
    check_against_definition<svq::wide_uint<384>>(128, 187, 1000, 6);
    check_against_definition<svq::wide_uint<768>>(128, 449, 300, 7);
    check_against_definition<svq::wide_uint<1024>>(256, 760, 50, 8);
    // Configurations with the P(8, k) leaf table (8 K <= 6 N) and the P(4, k) one.
    check_against_definition<std::uint64_t>(16, 12, 20000, 9);
    check_against_definition<svq::wide_uint<256>>(128, 83, 2000, 10);
    check_against_definition<svq::wide_uint<128>>(64, 40, 2000, 11);
}

TEST_CASE("unrank_batch over many groups == the plain definition group by group") {
    // (128, 83): P(8, k) leaves; (128, 184) and (128, 376): 3 and 4 bpw, wide nodes of 2 to 8 words.
    for (const std::size_t k : {83, 184, 376}) {
        const svq::pvq_split_index fast(128, k);
        const svq::oracle::pvq_split_lattice<svq::wide_uint<512>> plain(128, k);
        std::mt19937_64 rng(k);
        const std::size_t groups = 64, w = fast.limbs();
        std::vector<std::uint64_t> words(groups * w);
        for (std::size_t g = 0; g < groups; ++g) {
            const std::vector<std::uint64_t> one = random_index(fast, rng);
            std::copy(one.begin(), one.end(), words.begin() + static_cast<std::ptrdiff_t>(g * w));
        }
        std::vector<int> y(groups * 128, 99), expect(128);
        svq::pvq_split_index::unrank_workspace ws;
        fast.unrank_batch(words.data(), groups, y.data(), ws);
        int mismatches = 0;
        for (std::size_t g = 0; g < groups; ++g) {
            plain.unrank(svq::detail::index_from_limbs<svq::wide_uint<512>>(words.data() + g * w, w), expect);
            mismatches += !std::equal(expect.begin(), expect.end(), y.begin() + static_cast<std::ptrdiff_t>(g * 128));
        }
        INFO("K = " << k);
        REQUIRE(mismatches == 0);
    }
}

TEST_CASE("table-driven split index round trips 10^5 random indices per configuration") {
    for (const auto& [n, k] : std::vector<std::pair<std::size_t, std::size_t>>{
             {8, 16}, {32, 50}, {128, 83}, {128, 187}, {128, 449}, {12, 19}, {1, 5}}) {
        const svq::pvq_split_index ix(n, k);
        std::mt19937_64 rng(n * 1000 + k);
        std::vector<int> y(n);
        std::vector<std::uint64_t> back(ix.limbs());
        int bad = 0;
        for (int i = 0; i < 100000; ++i) {
            const std::vector<std::uint64_t> w = random_index(ix, rng);
            ix.unrank(w.data(), y.data());
            ix.rank(y.data(), back.data());
            bad += back != w || !valid_point(y, k);
        }
        INFO("N = " << n << " K = " << k);
        REQUIRE(bad == 0);
    }
}

TEST_CASE("matrix_decoder dequantizes bit for bit like quantized_matrix") {
    const std::size_t rows = 24, cols = 300;  // 300 = 2 x 128 + a tail of 44 (or 9 x 32 + 12)
    const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, 5);
    for (const auto& c : {explicit_config(128, 187, 3, 16, true), explicit_config(128, 449, 4, 8, false),
                          explicit_config(32, 50, 5, 16, true), explicit_config(8, 16, 2, 8, true),
                          explicit_config(128, 83, 1, 16, false),
                          explicit_config(16, 46, 7, 16, false)}) {  // 128 x 2117 unit factors: no table
        const svq::quantized_matrix q = svq::quantize(w, rows, cols, c);
        const std::vector<float> ref = q.dequantize();
        const svq::matrix_decoder dec(q);
        INFO(svq::to_string(c));
        require_dequantize_equals(dec, ref);
        // The codec still reaches its SQNR in the new index order (same points, other indices).
        double e = 0, d = 0;
        for (std::size_t i = 0; i < w.size(); ++i) {
            e += static_cast<double>(w[i]) * w[i];
            d += (static_cast<double>(w[i]) - ref[i]) * (w[i] - ref[i]);
        }
        REQUIRE(10 * std::log10(e / d) > 8.0);
    }
}

TEST_CASE("fused gemv == float GEMV on the dequantized matrix; batched == single") {
    const std::size_t rows = 40, cols = 300;
    const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, 9);
    const std::vector<float> x = svq::examples::gaussian_matrix(16, cols, 10);  // 16 vectors
    for (const bool rotate : {true, false}) {
        const svq::quantized_matrix q = svq::quantize(w, rows, cols, explicit_config(128, 187, 3, 16, rotate));
        const std::vector<float> wq = q.dequantize();
        const svq::matrix_decoder dec(q);
        const double worst = checked_gemv_error(dec, wq, x, rows, cols, 16);
        INFO("rotate " << rotate << ": largest |y - W x| / sum |w_i x_i| = " << worst);
        REQUIRE(worst < 2e-6);
    }
}

TEST_CASE("matrix_decoder rejects bad shapes and corrupt indices") {
    const std::size_t rows = 8, cols = 256;
    const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, 3);
    const svq::quantized_matrix q = svq::quantize(w, rows, cols, explicit_config(128, 187, 3, 16, true));
    const svq::matrix_decoder dec(q);
    std::vector<float> x(cols), y(rows), small(rows - 1), out(rows * cols - 1);
    REQUIRE_THROWS_AS(dec.gemv(std::span<const float>(x.data(), cols - 1), y), svq::invalid_argument);
    REQUIRE_THROWS_AS(dec.gemv(x, small), svq::invalid_argument);
    REQUIRE_THROWS_AS(dec.gemv_batch(x, y, 0), svq::invalid_argument);
    REQUIRE_THROWS_AS(dec.dequantize(out), svq::invalid_argument);
    // All index bits set: above V(128, 187) (384 bits hold 2^384 - 1 > V).
    const svq::quantized_matrix bad = with_index_bits_set(q, 0, 0);
    const svq::matrix_decoder bad_dec(bad);
    std::vector<float> all(rows * cols);
    REQUIRE_THROWS_AS(bad_dec.dequantize(all), svq::corrupt_data);
    REQUIRE_THROWS_AS(bad_dec.gemv(x, y), svq::corrupt_data);
    REQUIRE_THROWS_AS(bad.dequantize(), svq::corrupt_data);
    // On two threads the error reaches the caller from either slice: row 0 (this
    // thread) and the last row (the second thread, rows 4..7).
    const svq::quantized_matrix bad_last = with_index_bits_set(q, rows - 1, 0);
    const svq::matrix_decoder last_dec(bad_last);
    REQUIRE_THROWS_AS(bad_dec.dequantize(all, 2), svq::corrupt_data);
    REQUIRE_THROWS_AS(last_dec.dequantize(all, 2), svq::corrupt_data);
    REQUIRE_THROWS_AS(last_dec.gemv(x, y, 2), svq::corrupt_data);
    REQUIRE_THROWS_AS(last_dec.dequantize(all), svq::corrupt_data);
}

// ---- Speed configurations: the dense one-word path (docs/performance.md, "Speed configurations").

TEST_CASE("dense unrank == the plain definition on random indices (one-word configurations)") {
    struct nk {
        std::size_t n, k;
    };
    // The speed configurations at ~2 / 3 / 4 bpw and neighbours: N = 8, 16, 32;
    // (16, 46) and (8, 30) meet 4-coordinate nodes above the P(4, k) table's
    // reach (the fallback); (128, 11) and (16, 56) have indices past 2^62,
    // where the divisions take the divide instruction instead of a
    // multiply-high (a binary root and a four-way root).
    for (const nk c : {nk{16, 10}, nk{16, 22}, nk{16, 46}, nk{32, 21}, nk{8, 5}, nk{8, 11}, nk{8, 30}, nk{16, 1},
                       nk{32, 2}, nk{128, 11}, nk{16, 56}}) {
        const svq::pvq_split_index fast(c.n, c.k);
        const svq::oracle::pvq_split_lattice<std::uint64_t> plain(c.n, c.k);
        INFO("N = " << c.n << " K = " << c.k);
        REQUIRE(fast.dense());
        std::mt19937_64 rng(c.n * 1000 + c.k);
        const std::size_t groups = 3000;
        std::vector<std::uint64_t> index(groups);
        for (auto& v : index) v = random_index(fast, rng)[0];
        // Edge indices: 0 and V - 1.
        index[0] = 0;
        index[1] = fast.size_limbs()[0] - 1;
        std::vector<std::int8_t> y(groups * c.n, 99);
        svq::pvq_split_index::dense_workspace ws;
        fast.unrank_dense(index.data(), groups, y.data(), ws);
        std::vector<int> expect(c.n);
        int mismatches = 0;
        for (std::size_t g = 0; g < groups; ++g) {
            plain.unrank(index[g], expect);
            for (std::size_t i = 0; i < c.n; ++i) mismatches += y[g * c.n + i] != expect[i];
        }
        REQUIRE(mismatches == 0);
    }
}

// Random indices per configuration of the dense-walk check: 4,000, or
// SVQ_KERNEL_CHECK_COUNT (the benchmark-sized check: 10000000, docs/performance.md).
static std::size_t random_count() {
    const char* v = std::getenv("SVQ_KERNEL_CHECK_COUNT");
    return v != nullptr ? static_cast<std::size_t>(std::strtoull(v, nullptr, 10)) : 4000;
}

// The composition offsets of a four-way node of 16 with k pulses, computed
// here from the counts alone: the first index of every composition
// (k1, k2, k3, k4) in lexicographic order, then V(16, k).
static std::vector<std::uint64_t> composition_offsets(std::size_t k) {
    std::vector<std::uint64_t> out;
    std::uint64_t offset = 0;
    for (std::size_t a = 0; a <= k; ++a)
        for (std::size_t b = 0; a + b <= k; ++b)
            for (std::size_t c = 0; a + b + c <= k; ++c) {
                out.push_back(offset);
                offset += svq::pvq_count<std::uint64_t>(4, a) * svq::pvq_count<std::uint64_t>(4, b) *
                          svq::pvq_count<std::uint64_t>(4, c) * svq::pvq_count<std::uint64_t>(4, k - a - b - c);
            }
    out.push_back(offset);
    return out;
}

TEST_CASE("four-way nodes of 16: composition order, exhaustive for small K") {
    // N = 16, K = 2: compositions (0,0,0,2) (0,0,1,1) (0,0,2,0) (0,1,0,1) ...;
    // the first is the 32 points of P(4, 2) in the last quarter, in the order of P(4, 2).
    REQUIRE(svq::detail::quad_nodes(2));
    const svq::oracle::pvq_split_lattice<std::uint64_t> p16(16, 2), p4(4, 2);
    std::vector<int> y(16), q(4);
    for (std::uint64_t i = 0; i < 32; ++i) {
        p16.unrank(i, y);
        p4.unrank(i, q);
        REQUIRE(std::equal(q.begin(), q.end(), y.begin() + 12));
        REQUIRE(std::all_of(y.begin(), y.begin() + 12, [](int v) { return v == 0; }));
    }
    // (0,0,1,1): index 32 + i3 * 8 + i4 with P(4, 1) = (1,0,0,0) (-1,0,0,0) ... in the 4-node order.
    p16.unrank(32 + 8 * 1 + 2, y);
    std::vector<int> a(4), b(4);
    svq::oracle::pvq_split_lattice<std::uint64_t>(4, 1).unrank(1, a);
    svq::oracle::pvq_split_lattice<std::uint64_t>(4, 1).unrank(2, b);
    REQUIRE(std::equal(a.begin(), a.end(), y.begin() + 8));
    REQUIRE(std::equal(b.begin(), b.end(), y.begin() + 12));
    // Bijection: every index of N = 16 (K <= 3) and N = 32 (K <= 2), table-driven == definition.
    for (const auto& [n, kmax] : std::vector<std::pair<std::size_t, std::size_t>>{{16, 3}, {32, 2}, {31, 2}}) {
        for (std::size_t k = 1; k <= kmax; ++k) {
            const svq::oracle::pvq_split_lattice<std::uint64_t> plain(n, k);
            const svq::pvq_split_index fast(n, k);
            std::set<std::vector<int>> seen;
            std::vector<int> u(n), v(n);
            for (std::uint64_t i = 0; i < plain.size(); ++i) {
                plain.unrank(i, u);
                REQUIRE(valid_point(u, k));
                REQUIRE(plain.rank(u) == i);
                std::array<std::uint64_t, svq::detail::max_split_limbs> in{}, back{};
                in[0] = i;
                fast.unrank(in.data(), v.data());
                REQUIRE(v == u);
                fast.rank(u.data(), back.data());
                REQUIRE(back[0] == i);
                seen.insert(u);
            }
            REQUIRE(seen.size() == plain.size());
        }
    }
}

TEST_CASE("dense walk == the plain definition at every composition and root boundary", "[dense]") {
    struct nk {
        std::size_t n, k;
    };
    // Roots of 16 (four-way: every composition offset of K and its
    // neighbours), of 32 and 64 (binary roots over four-way nodes: every
    // boundary of the root row), of 8 (no four-way node); (8, 16) and
    // (16, 46) meet quarters past the P(4, k) table; (128, 11) and (16, 56)
    // indices past 2^62 (the divide instruction); then random indices.
    for (const nk c : {nk{16, 10}, nk{16, 22}, nk{16, 46}, nk{32, 21}, nk{8, 5}, nk{8, 11}, nk{8, 30}, nk{16, 1},
                       nk{32, 2}, nk{64, 6}, nk{8, 16}, nk{128, 11}, nk{16, 56}}) {
        const svq::pvq_split_index ix(c.n, c.k);
        const svq::oracle::pvq_split_lattice<std::uint64_t> plain(c.n, c.k);
        INFO("N = " << c.n << " K = " << c.k);
        REQUIRE(ix.dense());
        const std::uint64_t v = ix.size_limbs()[0];
        std::vector<std::uint64_t> bounds;
        if (c.n == 16) {
            bounds = composition_offsets(c.k);
        } else {
            const auto& root = ix.levels()[static_cast<std::size_t>(ix.root())];
            bounds.assign(root.row(c.k), root.row(c.k) + c.k + 2);
        }
        std::vector<std::uint64_t> index{0, v - 1};
        for (const std::uint64_t b : bounds)
            for (const std::uint64_t e : {b - 1, b, b + 1})
                if (e < v) index.push_back(e);  // 0 - 1 wraps above V: skipped
        std::mt19937_64 rng(c.n * 7919 + c.k);
        const std::size_t randoms = random_count();
        while (index.size() < bounds.size() * 3 + randoms) index.push_back(random_index(ix, rng)[0]);
        const std::size_t total = index.size();
        std::vector<std::int8_t> got(total * c.n, 99);
        svq::pvq_split_index::dense_workspace ws;
        ix.unrank_dense(index.data(), total, got.data(), ws);
        std::vector<int> expect(c.n);
        int mismatches = 0;
        for (std::size_t g = 0; g < total; ++g) {
            plain.unrank(index[g], expect);
            for (std::size_t i = 0; i < c.n; ++i) mismatches += got[g * c.n + i] != expect[i];
        }
        REQUIRE(mismatches == 0);
    }
}

TEST_CASE("dense path only where the index fits one word and N is a power of two >= 8") {
    REQUIRE(svq::pvq_split_index(16, 46).dense());         // 59 bits
    REQUIRE(svq::pvq_split_index(32, 21).dense());         // 62 bits
    REQUIRE_FALSE(svq::pvq_split_index(32, 45).dense());   // 92 bits: two words
    REQUIRE_FALSE(svq::pvq_split_index(128, 83).dense());  // the auto-chosen 2 bpw configuration
    REQUIRE_FALSE(svq::pvq_split_index(12, 19).dense());   // not a power of two
    REQUIRE_FALSE(svq::pvq_split_index(4, 30).dense());    // a leaf alone
}

TEST_CASE("speed configurations: index in one word, dense decode bit for bit like quantized_matrix") {
    const std::size_t rows = 24, cols = 300;  // N = 16: 18 groups + a tail of 12; N = 32: 9 + 12
    const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, 21);
    const std::vector<float> x = svq::examples::gaussian_matrix(8, cols, 22);
    for (const double bpw : {2.0, 3.0, 4.0}) {
        const svq::config_candidate cc = svq::choose_config(w, rows, cols, bpw, svq::speed_config_options());
        INFO(bpw << " bpw: " << svq::to_string(cc.config));
        REQUIRE(cc.bits_per_weight <= bpw);
        REQUIRE(svq::pvq_index_bits(cc.config.group_dim, cc.config.pulses) <= 63);
        for (const bool rotate : {true, false}) {
            svq::matrix_config c = cc.config;
            c.rotate = rotate;
            const svq::quantized_matrix q = svq::quantize(w, rows, cols, c);
            const svq::matrix_decoder dec(q);
            REQUIRE(dec.full_index().dense());
            const std::vector<float> ref = q.dequantize();
            require_dequantize_equals(dec, ref);
            // gemv: single == batched == two threads, and close to W x in double.
            const double worst = checked_gemv_error(dec, ref, x, rows, cols, 8);
            INFO("largest |y - W x| / sum |w_i x_i| = " << worst);
            REQUIRE(worst < 2e-6);
        }
    }
}

// The integer-stage rotation (format/row_format.hpp) written out plainly
// from the row's points and gain levels: z = H_N y exactly in integers, float(z) * factor, the float butterfly stages
// half = N .. n/2 in ascending order, then the signs; the factor is
// float(s) * float(level / sqrt(||y||^2 n)).
std::vector<float> integer_stage_oracle(const svq::quantized_matrix& q) {
    const svq::matrix_layout& l = q.layout();
    const std::size_t n = l.cols, dim = l.group_dim;
    svq::row_format::buffers buffers = q.format().make_buffers();
    const svq::hadamard_rotation rotation(n, q.config().seed);
    const std::span<const float> signs = rotation.signs();
    std::vector<float> out(l.rows * n);
    std::vector<int> y(n);
    std::vector<double> levels(l.groups_per_row());
    for (std::size_t r = 0; r < l.rows; ++r) {
        const double s = q.format().read_points(q.words(), r, y.data(), levels.data(), buffers);
        float* w = out.data() + r * n;
        for (std::size_t j = 0; j < l.groups_per_row(); ++j) {
            int* z = y.data() + j * dim;
            long long e = 0;
            for (std::size_t i = 0; i < dim; ++i) e += static_cast<long long>(z[i]) * z[i];
            for (std::size_t half = 1; half < dim; half *= 2)
                for (std::size_t b = 0; b < dim; b += 2 * half)
                    for (std::size_t i = b; i < b + half; ++i) {
                        const int a = z[i], c = z[i + half];
                        z[i] = a + c;
                        z[i + half] = a - c;
                    }
            const float factor =
                static_cast<float>(s) *
                static_cast<float>(levels[j] / std::sqrt(static_cast<double>(e) * static_cast<double>(n)));
            for (std::size_t i = 0; i < dim; ++i) w[j * dim + i] = static_cast<float>(z[i]) * factor;
        }
        for (std::size_t half = dim; half < n; half *= 2)
            for (std::size_t b = 0; b < n; b += 2 * half)
                for (std::size_t i = b; i < b + half; ++i) {
                    const float a = w[i], c = w[i + half];
                    w[i] = a + c;
                    w[i + half] = a - c;
                }
        for (std::size_t i = 0; i < n; ++i) w[i] *= signs[i];
    }
    return out;
}

TEST_CASE("integer-stage rotation: where it applies, and every decoder computes it bit for bit") {
    {
        const auto applies = [](std::size_t cols, const svq::matrix_config& c) {
            const svq::matrix_layout l = svq::make_layout(4, cols, c);
            const svq::hadamard_rotation rot(cols, c.seed);
            return svq::detail::integer_stage_rotation(l, c.rotate ? &rot : nullptr);
        };
        REQUIRE(applies(256, explicit_config(16, 22, 3, 16, true)));
        REQUIRE(applies(256, explicit_config(128, 187, 3, 16, true)));
        REQUIRE_FALSE(applies(256, explicit_config(16, 22, 3, 16, false)));  // not rotated
        REQUIRE_FALSE(applies(300, explicit_config(16, 22, 3, 16, true)));   // two rotation blocks, a tail group
        REQUIRE_FALSE(applies(384, explicit_config(16, 22, 3, 16, true)));   // 3 x 128: a dense factor
        REQUIRE_FALSE(applies(256, explicit_config(12, 19, 3, 16, true)));   // N not a power of two
    }
    const std::size_t rows = 6;
    // AVX-512 dense bodies (N = 16, 32; a single fused pass at 64 and 256 columns,
    // two passes at 1024), the portable dense body (N = 8; N = 16 at 32 columns),
    // a binary root above four-way nodes (N = 64) and the general path (N = 128).
    const std::vector<std::pair<std::size_t, svq::matrix_config>> cases = {
        {64, explicit_config(16, 22, 3, 16, true)},   {256, explicit_config(16, 22, 3, 16, true)},
        {1024, explicit_config(16, 46, 4, 16, true)}, {256, explicit_config(32, 21, 1, 16, true)},
        {2048, explicit_config(32, 21, 2, 8, true)},  {32, explicit_config(16, 10, 2, 16, true)},
        {256, explicit_config(8, 11, 2, 16, true)},   {512, explicit_config(64, 6, 2, 16, true)},
        {256, explicit_config(128, 187, 3, 16, true)}, {1024, explicit_config(128, 83, 1, 8, true)},
        {256, explicit_config(16, 46, 7, 16, true)}};  // more unit factors than detail::dense_units tabulates
    for (const auto& [cols, c] : cases) {
        INFO(cols << " columns, " << svq::to_string(c));
        const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, 31 + cols);
        const svq::quantized_matrix q = svq::quantize(w, rows, cols, c);
        const svq::hadamard_rotation rot(cols, c.seed);
        REQUIRE(svq::detail::integer_stage_rotation(q.layout(), &rot));
        const std::vector<float> ref = q.dequantize();
        const std::vector<float> oracle = integer_stage_oracle(q);
        REQUIRE(std::memcmp(ref.data(), oracle.data(), ref.size() * sizeof(float)) == 0);
        const svq::matrix_decoder dec(q);
        require_dequantize_equals(dec, ref);
        std::vector<float> row(cols);
        q.decode_row(rows - 1, row);
        REQUIRE(std::memcmp(row.data(), ref.data() + (rows - 1) * cols, cols * sizeof(float)) == 0);
        // Against the exact value R^T (rotated-domain row) in double: a few float roundings.
        std::vector<double> exact(cols);
        for (std::size_t r = 0; r < rows; ++r) {
            dec.decode_row_rotated(r, row.data());
            double largest = 0.0;
            for (std::size_t i = 0; i < cols; ++i) {
                exact[i] = row[i];
                largest = std::max(largest, std::abs(exact[i]));
            }
            rot.inverse(std::span<double>(exact));
            for (std::size_t i = 0; i < cols; ++i)
                REQUIRE(std::abs(exact[i] - ref[r * cols + i]) <= 1e-6 * largest * std::sqrt(double(cols)));
        }
    }
}

TEST_CASE("dequantize of an 8 MB output (rows streamed out during the next row's walk) == quantized_matrix") {
    const std::size_t rows = 512, cols = 4096;  // rows * cols * 4 bytes = svq::detail::stream_bytes
    REQUIRE(rows * cols * sizeof(float) >= svq::detail::stream_bytes);
    const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, 41);
    for (const auto& c : {explicit_config(16, 22, 3, 16, true), explicit_config(32, 21, 1, 16, true),
                          explicit_config(16, 46, 4, 16, false)}) {
        INFO(svq::to_string(c));
        const svq::quantized_matrix q = svq::quantize(w, rows, cols, c);
        const svq::matrix_decoder dec(q);
        REQUIRE(dec.full_index().dense());
        const std::vector<float> ref = q.dequantize();
        require_dequantize_equals(dec, ref);
    }
}

TEST_CASE("max_index_bits lowers K until the index fits, for every candidate") {
    const std::size_t rows = 8, cols = 256;
    for (const double bpw : {2.0, 4.0, 6.0}) {
        const auto all = svq::candidate_configs(rows, cols, bpw, svq::speed_config_options());
        REQUIRE(!all.empty());
        for (const auto& c : all) {
            INFO(bpw << " bpw: " << svq::to_string(c.config));
            REQUIRE(svq::pvq_index_bits(c.config.group_dim, c.config.pulses) <= 63);
            REQUIRE(c.bits_per_weight <= bpw);
            // The largest such K: one more pulse would need a wider index or more bits.
            svq::matrix_config more = c.config;
            ++more.pulses;
            REQUIRE((svq::pvq_index_bits(more.group_dim, more.pulses) > 63 ||
                     svq::make_layout(rows, cols, more).bits_per_weight() > bpw));
        }
    }
}

TEST_CASE("speed configurations: a matrix without a tail, and a corrupt index is reported") {
    const std::size_t rows = 6, cols = 256;
    const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, 23);
    const svq::quantized_matrix q = svq::quantize(w, rows, cols, explicit_config(16, 22, 3, 16, true));
    const svq::matrix_decoder dec(q);
    REQUIRE(dec.full_index().dense());
    const std::vector<float> ref = q.dequantize();
    std::vector<float> out(rows * cols);
    dec.dequantize(out);
    REQUIRE(std::memcmp(out.data(), ref.data(), ref.size() * sizeof(float)) == 0);
    // Row 3, group 5: all 44 index bits set, above V(16, 22) < 2^44.
    const svq::quantized_matrix bad = with_index_bits_set(q, 3, 5);
    const svq::matrix_decoder bad_dec(bad);
    std::vector<float> x(cols), y(rows);
    REQUIRE_THROWS_AS(bad_dec.dequantize(out), svq::corrupt_data);
    REQUIRE_THROWS_AS(bad_dec.gemv(x, y), svq::corrupt_data);
    REQUIRE_THROWS_AS(bad.dequantize(), svq::corrupt_data);
}

// ---- Batched products from gemm_batch vectors: tiles of decoded rows times X (Eigen's GEMM).

TEST_CASE("gemv_batch with gemm_batch vectors or more: GEMM of decoded tiles, within 2e-6 of W x") {
    // 150 rows: two whole tiles of 64 and a short one; 300 columns: full groups and a tail.
    const std::size_t rows = 150, cols = 300;
    const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, 31);
    const std::size_t batch = svq::matrix_decoder::gemm_batch + 8;
    const std::vector<float> x = svq::examples::gaussian_matrix(batch, cols, 32);
    for (const auto& c : {explicit_config(128, 187, 3, 16, true), explicit_config(16, 22, 3, 16, true),
                          explicit_config(32, 50, 5, 16, false)}) {
        INFO(svq::to_string(c));
        const svq::quantized_matrix q = svq::quantize(w, rows, cols, c);
        const std::vector<float> wq = q.dequantize();
        const svq::matrix_decoder dec(q);
        for (const std::size_t vectors : {svq::matrix_decoder::gemm_batch, batch}) {
            for (const unsigned threads : {1u, 2u, 3u}) {
                std::vector<float> y(vectors * rows, std::nanf(""));
                dec.gemv_batch(std::span<const float>(x.data(), vectors * cols), y, vectors, threads);
                const double worst = relative_gemv_error(y, wq, x, rows, cols, vectors);
                INFO(vectors << " vectors, " << threads << " threads: largest |y - W x| / sum |w_i x_i| = " << worst);
                REQUIRE(worst < 2e-6);
            }
        }
    }
}

TEST_CASE("gemv_batch's GEMM path: rows of 140,000 columns take tiles of 7 rows (4 MB)") {
    const std::size_t rows = 10, cols = 140000;
    const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, 33);
    const std::size_t batch = svq::matrix_decoder::gemm_batch;
    const std::vector<float> x = svq::examples::gaussian_matrix(batch, cols, 34);
    const svq::quantized_matrix q = svq::quantize(w, rows, cols, explicit_config(16, 22, 3, 16, false));
    const svq::matrix_decoder dec(q);
    REQUIRE(dec.tile_rows() == 7);
    std::vector<float> y(batch * rows, std::nanf(""));
    dec.gemv_batch(x, y, batch, 2);
    REQUIRE(relative_gemv_error(y, q.dequantize(), x, rows, cols, batch) < 2e-6);
}

TEST_CASE("gemv_batch's GEMM path reports a corrupt index and bad shapes") {
    const std::size_t rows = 6, cols = 256;
    const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, 23);
    const svq::quantized_matrix q = svq::quantize(w, rows, cols, explicit_config(16, 22, 3, 16, true));
    const svq::quantized_matrix bad = with_index_bits_set(q, 5, 2);  // above V(16, 22) < 2^44
    const svq::matrix_decoder dec(bad);
    const std::size_t batch = svq::matrix_decoder::gemm_batch;
    std::vector<float> x(batch * cols, 1.0f), y(batch * rows);
    REQUIRE_THROWS_AS(dec.gemv_batch(x, y, batch), svq::corrupt_data);
    REQUIRE_THROWS_AS(dec.gemv_batch(x, y, batch, 2), svq::corrupt_data);
    REQUIRE_THROWS_AS(dec.gemv_batch(std::span<const float>(x.data(), x.size() - 1), y, batch), svq::invalid_argument);
}

TEST_CASE("parallel_chunks: every item exactly once, any thread count; an exception reaches the caller") {
    for (const std::size_t n : {0, 1, 7, 100, 1000}) {
        for (const std::size_t chunk : {1, 3, 64}) {
            for (const unsigned threads : {0u, 1u, 2u, 5u}) {
                std::vector<std::atomic<int>> seen(n);
                std::atomic<std::size_t> largest{0};  // (Catch2 asserts on this thread only)
                svq::detail::parallel_chunks(n, threads, chunk, [&](std::size_t first, std::size_t end) {
                    std::size_t was = largest.load();
                    while (end - first > was && !largest.compare_exchange_weak(was, end - first)) {
                    }
                    for (std::size_t i = first; i < end; ++i) seen[i].fetch_add(1);
                });
                std::size_t once = 0;
                for (const auto& s : seen) once += s.load() == 1;
                INFO(n << " items, chunks of " << chunk << ", " << threads << " threads");
                REQUIRE(once == n);
                // One thread takes [0, n) in one call; more take chunks.
                const unsigned t = threads == 0 ? std::max(1u, std::thread::hardware_concurrency()) : threads;
                REQUIRE(largest.load() == (t == 1 || n <= chunk ? n : chunk));
            }
        }
    }
    // With a state: made once per thread, kept over that thread's chunks.
    std::atomic<int> states{0};
    std::atomic<std::size_t> items{0};
    struct counter {
        std::atomic<std::size_t>* total;
        std::size_t mine = 0;
        ~counter() { total->fetch_add(mine); }
    };
    svq::detail::parallel_chunks(
        1000, 2, 7,
        [&] {
            states.fetch_add(1);
            return counter{&items};
        },
        [](counter& c, std::size_t first, std::size_t end) { c.mine += end - first; });
    REQUIRE(states.load() == 2);
    REQUIRE(items.load() == 1000);
    REQUIRE_THROWS_AS(svq::detail::parallel_chunks(100, 2, 3,
                                                   [](std::size_t first, std::size_t) {
                                                       if (first == 99) throw svq::corrupt_data("chunk 33");
                                                   }),
                      svq::corrupt_data);
    REQUIRE(svq::detail::chunk_rows(4096, 2) == 64);
    REQUIRE(svq::detail::chunk_rows(100, 2) == 6);
    REQUIRE(svq::detail::chunk_rows(3, 4) == 1);
}
