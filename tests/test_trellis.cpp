// The trellis codec (trellis/trellis.hpp, kernels/trellis.hpp): the code and
// the bit windows against plain definitions, the Viterbi search against every
// stream of small segments, the AVX-512 kernels against the portable ones bit
// for bit, the matrix (layout, rebuild from parts, threads, products) and its
// errors.
#include "catch.hpp"

#include <common/synthetic.hpp>

#include <svq/kernels/trellis.hpp>
#include <svq/matrix/metrics.hpp>
#include <svq/trellis/trellis.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace trellis_test {

using svq::detail::trellis_bit;
using svq::detail::trellis_code;

// Bit i of p, first bit most significant.
int bit_at(const std::vector<std::uint8_t>& p, std::size_t i) { return (p[i >> 3] >> (7 - (i & 7))) & 1; }

// The window of L bits at `bit`, one bit at a time.
std::uint32_t window_by_bits(const std::vector<std::uint8_t>& p, std::size_t bit, unsigned L) {
    std::uint32_t s = 0;
    for (unsigned i = 0; i < L; ++i) s = (s << 1) | static_cast<std::uint32_t>(bit_at(p, bit + i));
    return s;
}

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::uint8_t> p(n);
    for (auto& b : p) b = static_cast<std::uint8_t>(rng());
    return p;
}

// Squared error of the stream p for weights wn (the encoder's units), in double.
double stream_error(const std::vector<std::uint8_t>& p, const std::vector<float>& wn, unsigned b, unsigned L, float c) {
    double e = 0.0;
    for (std::size_t t = 0; t < wn.size(); ++t) {
        const double d = wn[t] - static_cast<double>(c) * trellis_code(window_by_bits(p, trellis_bit(t, b), L));
        e += d * d;
    }
    return e;
}

svq::trellis_config config_of(unsigned b, unsigned L, bool rotate) {
    return svq::trellis_config{.bits_per_64 = b, .state_bits = L, .rotate = rotate};
}

}  // namespace trellis_test

using namespace trellis_test;

TEST_CASE("trellis code: byte sum of a s + b minus 510, and its spread") {
    std::mt19937_64 rng(3);
    for (int i = 0; i < 1000; ++i) {
        const auto s = static_cast<std::uint32_t>(rng());
        const std::uint32_t x = s * 34038481u + 76625530u;
        unsigned char bytes[4];
        std::memcpy(bytes, &x, 4);
        REQUIRE(trellis_code(s) == bytes[0] + bytes[1] + bytes[2] + bytes[3] - 510);
    }
    // Over the 2^16 states of L = 16: mean near 0, RMS near sqrt(21845) = 147.8.
    double sum = 0.0, sq = 0.0;
    for (std::uint32_t s = 0; s < (1u << 16); ++s) {
        sum += trellis_code(s);
        sq += static_cast<double>(trellis_code(s)) * trellis_code(s);
    }
    CHECK(std::fabs(sum / 65536.0) < 2.0);
    CHECK(std::sqrt(sq / 65536.0) == Catch::Approx(svq::detail::trellis_code_rms).epsilon(0.02));
}

TEST_CASE("trellis windows: bit positions and reads match a bit-by-bit reader") {
    CHECK(trellis_bit(0, 192) == 0);
    CHECK(trellis_bit(1, 208) == 3);
    CHECK(trellis_bit(4, 208) == 13);
    CHECK(trellis_bit(16, 208) == 52);
    CHECK(trellis_bit(7, 150) == 16);
    const auto p = random_bytes(64, 5);
    for (unsigned L = 4; L <= 16; ++L)
        for (std::size_t bit = 0; bit + L + 32 <= 8 * 48; ++bit)
            REQUIRE(svq::detail::trellis_window(p.data(), bit, L) == window_by_bits(p, bit, L));
    // The AVX-512 kernels (where built) read the same codes as the portable ones, bit for bit.
    for (unsigned b : {64u, 96u, 144u, 150u, 191u, 192u, 208u, 256u, 307u, 320u})
        for (unsigned L : {5u, 12u, 16u}) {
            if ((b + 63) / 64 > L) continue;
            const auto q = random_bytes(1200, b * 100 + L);
            const svq::detail::trellis_lanes lanes(b, L);
            for (std::size_t first = 0; first < 16 * 9; first += 16) {
                const std::size_t blocks = 10;
                std::vector<int> z(16 * blocks);
                svq::detail::trellis_codes_portable(q.data(), first, z.size(), b, L, z.data());
                for (std::size_t t = 0; t < z.size(); ++t)
                    REQUIRE(z[t] == trellis_code(window_by_bits(q, trellis_bit(first + t, b), L)));
                std::vector<float> out(z.size()), ref(z.size()), x(z.size());
                svq::detail::trellis_decode(lanes, q.data(), first, blocks, b, L, 0.37f, out.data());
                svq::detail::trellis_decode_portable(q.data(), first, blocks, b, L, 0.37f, ref.data());
                REQUIRE(out == ref);
                // With the four in-block Hadamard stages (exact on the integers) before the product.
                svq::detail::trellis_decode<true>(lanes, q.data(), first, blocks, b, L, 0.37f, out.data());
                svq::detail::trellis_decode_portable<true>(q.data(), first, blocks, b, L, 0.37f, ref.data());
                REQUIRE(out == ref);
                std::mt19937_64 rng(first);
                std::normal_distribution<float> nd;
                double exact = 0.0, mag = 0.0;
                for (std::size_t t = 0; t < x.size(); ++t) {
                    x[t] = nd(rng);
                    exact += static_cast<double>(z[t]) * x[t];
                    mag += std::fabs(static_cast<double>(z[t]) * x[t]);
                }
                REQUIRE(std::fabs(svq::detail::trellis_dot(lanes, q.data(), first, blocks, b, L, x.data()) - exact) <
                        1e-6 * mag);
                REQUIRE(std::fabs(svq::detail::trellis_dot_portable(q.data(), first, blocks, b, L, x.data()) - exact) <
                        1e-6 * mag);
            }
        }
}

TEST_CASE("trellis Viterbi passes: the dispatched kernels equal the portable ones bit for bit") {
    std::mt19937_64 rng(11);
    std::uniform_real_distribution<float> u(0.0f, 4.0f);
    for (unsigned L : {4u, 6u, 12u}) {
        const std::size_t S = std::size_t{1} << L;
        std::vector<float> zf(S);
        for (std::size_t s = 0; s < S; ++s) zf[s] = static_cast<float>(trellis_code(static_cast<std::uint32_t>(s)));
        for (unsigned k = 0; k <= std::min(5u, L); ++k) {
            std::vector<float> cost(S);
            for (auto& v : cost) v = u(rng);
            cost[S / 2] = cost[0];  // a tie: the smaller u wins in both
            const std::size_t P = S >> k;
            std::vector<float> m1(P + 16), m2(P + 16), o1(S), o2(S);
            std::vector<std::uint8_t> b1(P), b2(P);
            if (k > 0) {
                const float l1 = svq::detail::trellis_min(cost.data(), L, k, m1.data(), b1.data());
                const float l2 = svq::detail::trellis_min_portable(cost.data(), L, k, m2.data(), b2.data());
                REQUIRE(l1 == l2);
                REQUIRE(b1 == b2);
                REQUIRE(std::equal(m1.begin(), m1.begin() + static_cast<std::ptrdiff_t>(P), m2.begin()));
                // The plain definition.
                for (std::size_t x = 0; x < P; ++x) {
                    float m = std::numeric_limits<float>::infinity();
                    for (std::size_t uu = 0; uu < (std::size_t{1} << k); ++uu) m = std::min(m, cost[uu * P + x]);
                    REQUIRE(m2[x] == m);
                    REQUIRE(cost[b2[x] * P + x] == m);
                }
                REQUIRE(l2 == *std::min_element(m2.begin(), m2.begin() + static_cast<std::ptrdiff_t>(P)));
            } else {
                std::copy(cost.begin(), cost.end(), m1.begin());
                std::copy(cost.begin(), cost.end(), m2.begin());
            }
            svq::detail::trellis_add(m1.data(), 0.25f, zf.data(), 0.7f, 0.0073f, L, k, o1.data());
            svq::detail::trellis_add_portable(m2.data(), 0.25f, zf.data(), 0.7f, 0.0073f, L, k, o2.data());
            REQUIRE(o1 == o2);
            for (std::size_t s = 0; s < S; ++s) {
                const double d = 0.7 - 0.0073 * static_cast<double>(zf[s]);
                REQUIRE(o2[s] == Catch::Approx(d * d + (m2[s >> k] - 0.25)).epsilon(1e-5).margin(1e-6));
            }
        }
    }
}

TEST_CASE("trellis Viterbi: the least-error stream of every small segment (brute force over all streams)") {
    std::mt19937_64 rng(21);
    std::normal_distribution<float> nd;
    struct shape {
        unsigned b, L;
        std::size_t n;
    };
    for (const shape sh : {shape{64, 4, 8}, shape{128, 4, 6}, shape{96, 4, 8}, shape{192, 5, 4}, shape{80, 6, 7},
                           shape{150, 4, 6}}) {
        svq::trellis_config cfg = config_of(sh.b, sh.L, false);
        const svq::detail::trellis_layout l = svq::detail::make_trellis_layout(1, sh.n, cfg, "test");
        REQUIRE(l.segments == 1);
        const std::size_t bits = svq::detail::trellis_layout::bits_of(sh.n, sh.b, sh.L);
        REQUIRE(bits <= 16);
        std::vector<float> zf(std::size_t{1} << sh.L);
        for (std::size_t s = 0; s < zf.size(); ++s) zf[s] = static_cast<float>(trellis_code(static_cast<std::uint32_t>(s)));
        const float c = 0.0073f;
        for (int trial = 0; trial < 5; ++trial) {
            std::vector<float> wn(sh.n);
            for (auto& v : wn) v = nd(rng);
            svq::detail::trellis_work wk(l);
            std::vector<std::uint8_t> out(l.payload_bytes + 16, 0);
            svq::detail::trellis_viterbi(wn.data(), sh.n, zf.data(), c, l, wk, out.data());
            double best = std::numeric_limits<double>::infinity();
            for (std::uint32_t v = 0; v < (1u << bits); ++v) {
                std::vector<std::uint8_t> p(8, 0);
                svq::detail::put_trellis_bits(p.data(), 0, v, static_cast<unsigned>(bits));
                best = std::min(best, stream_error(p, wn, sh.b, sh.L, c));
            }
            const double got = stream_error(out, wn, sh.b, sh.L, c);
            INFO("b " << sh.b << " L " << sh.L << " n " << sh.n << " trial " << trial);
            REQUIRE(got >= best);
            REQUIRE(got <= best * (1 + 1e-5) + 1e-9);
            for (std::size_t i = (bits + 7) / 8; i < out.size(); ++i) REQUIRE(out[i] == 0);  // nothing past the segment
        }
    }
}

TEST_CASE("trellis layout: segments, bytes and bits per weight") {
    // L = 12, 3 bpw: back pointers 2^9 bytes per weight -> segments of 2^22 / 2^9 = 8,192 weights.
    const auto l = svq::detail::make_trellis_layout(64, 4096, config_of(192, 12, true), "test");
    CHECK(l.segment_weights == 8192);
    CHECK(l.segments == 32);
    CHECK(l.segment_bytes == (8191 * 3 + 12 + 7) / 8);
    CHECK(l.payload_bytes == 32 * l.segment_bytes);
    // L = 12 at 2 to 3 bpw: 2^10 bytes -> 4,096 weights; 5 rows of 1000 -> 2 segments, the last 904.
    const auto m = svq::detail::make_trellis_layout(5, 1000, config_of(128, 12, false), "test");
    CHECK(m.segment_weights == 4096);
    CHECK(m.segments == 2);
    CHECK(m.weights_in(1) == 904);
    CHECK(m.payload_bytes == (4095 * 2 + 12 + 7) / 8 + (903 * 2 + 12 + 7) / 8);
    // L = 16: 2^13 bytes at 3 bpw would give 512 weights; at least 4,096, unless that passes 2^25 bytes
    // (L = 16 at 1 bpw: 2^15 bytes per weight -> 1,024 weights).
    CHECK(svq::detail::make_trellis_layout(8, 4096, config_of(192, 16, false), "test").segment_weights == 4096);
    CHECK(svq::detail::make_trellis_layout(8, 4096, config_of(64, 16, false), "test").segment_weights == 1024);
    CHECK(svq::detail::make_trellis_layout(8, 4096, config_of(128, 16, false), "test").segment_weights == 2048);
    CHECK(svq::detail::make_trellis_layout(8, 100, config_of(192, 16, false), "test").segment_weights == 800);
    // A small matrix: one segment of all its weights.
    const auto s = svq::detail::make_trellis_layout(5, 7, config_of(208, 12, false), "test");
    CHECK(s.segments == 1);
    CHECK(s.payload_bytes == (34 * 208 / 64 + 12 + 7) / 8);

    const std::vector<float> w = svq::examples::gaussian_matrix(8, 256, 4);
    const svq::trellis_matrix q = svq::quantize_trellis(w, 8, 256, config_of(208, 10, true));
    CHECK(q.stored_bits() == q.payload().size() * 8 + 8 * 16 + 64);
    CHECK(q.bits_per_weight() == Catch::Approx(static_cast<double>(q.stored_bits()) / 2048.0));
}

TEST_CASE("trellis matrix: SQNR on Gaussian and Student-t rows, every decode path the same matrix") {
    const std::size_t rows = 32, cols = 1024;
    const std::vector<float> g = svq::examples::gaussian_matrix(rows, cols, 1);
    const std::vector<float> t4 = svq::examples::student_t_matrix(rows, cols, 4, 1);
    struct point {
        unsigned b;
        double floor_db;  // measured 11.3 / 17.1 / 23.1 dB (L = 12, 32 x 1024), less 0.3 dB
    };
    for (const point pt : {point{128, 11.0}, point{192, 16.8}, point{256, 22.8}}) {
        for (const auto* w : {&g, &t4}) {
            const svq::trellis_matrix q = svq::quantize_trellis(*w, rows, cols, config_of(pt.b, 12, true));
            INFO("bits_per_64 " << pt.b << (w == &g ? " gaussian" : " student-t"));
            const std::vector<float> back = q.dequantize();
            CHECK(svq::sqnr_db(*w, std::span<const float>(back)) > pt.floor_db);
            CHECK(q.bits_per_weight() < pt.b / 64.0 + 0.04);
            // decode_row and two threads give the same floats.
            std::vector<float> row(cols), two(rows * cols);
            for (std::size_t r : {std::size_t{0}, rows - 1}) {
                q.decode_row(r, row);
                REQUIRE(std::equal(row.begin(), row.end(), back.begin() + static_cast<std::ptrdiff_t>(r * cols)));
            }
            q.dequantize(two, 2);
            REQUIRE(two == back);
        }
    }
    // Rows of very different scales keep their own SQNR (each row has its factor).
    std::vector<float> w = g;
    for (std::size_t c = 0; c < cols; ++c) w[5 * cols + c] *= 1e-6f;
    for (std::size_t c = 0; c < cols; ++c) w[6 * cols + c] *= 1e6f;
    const svq::trellis_matrix q = svq::quantize_trellis(w, rows, cols, config_of(192, 12, true));
    std::vector<float> row(cols);
    for (std::size_t r : {std::size_t{5}, std::size_t{6}}) {
        q.decode_row(r, row);
        CHECK(svq::sqnr_db(std::span<const float>(w.data() + r * cols, cols), row) > 16.0);
    }
}

TEST_CASE("trellis matrix: the stored floats are factor times code, rebuilt from parts, any thread count") {
    for (const std::size_t cols : {std::size_t{96}, std::size_t{100}, std::size_t{6000}, std::size_t{8192}}) {
        const std::size_t rows = cols > 4096 ? 2 : 9;
        // L = 12 at 2 bpw has segments of 4,096 weights: rows of 6,000 and 8,192 cross them.
        const svq::trellis_config cfg = cols > 4096 ? config_of(128, 12, false) : config_of(208, 8, false);
        const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, cols);
        const svq::trellis_matrix q = svq::quantize_trellis(w, rows, cols, cfg);
        const svq::trellis_matrix q2 = svq::quantize_trellis(w, rows, cols, cfg, 2);
        REQUIRE(std::equal(q.payload().begin(), q.payload().end(), q2.payload().begin(), q2.payload().end()));
        REQUIRE(std::equal(q.factors().begin(), q.factors().end(), q2.factors().begin(), q2.factors().end()));
        const std::vector<float> back = q.dequantize();
        const auto& l = q.layout();
        const std::vector<std::uint8_t> payload(q.payload().begin(), q.payload().end());
        std::vector<std::uint8_t> padded = payload;
        padded.resize(payload.size() + 8, 0);
        std::vector<int> z(cols);
        for (std::size_t r = 0; r < rows; ++r) {
            q.row_codes(r, z);
            for (std::size_t c = 0; c < cols; ++c) {
                const std::size_t t = r * cols + c, seg = t / l.segment_weights, local = t % l.segment_weights;
                const int code = trellis_code(window_by_bits(padded, 8 * seg * l.segment_bytes + trellis_bit(local, l.bits64), l.L));
                REQUIRE(z[c] == code);
                REQUIRE(back[t] == static_cast<float>(code) * q.factor(r));
            }
            // The factor is the least-squares fit of the row to its codes, to the nearest bfloat16.
            double num = 0.0, den = 0.0;
            for (std::size_t c = 0; c < cols; ++c) {
                num += static_cast<double>(w[r * cols + c]) * z[c];
                den += static_cast<double>(z[c]) * z[c];
            }
            REQUIRE(q.factors()[r] == svq::float_to_bf16(static_cast<float>(num / den)));
        }
        const svq::trellis_matrix rebuilt(rows, cols, cfg, payload,
                                          std::vector<std::uint16_t>(q.factors().begin(), q.factors().end()));
        REQUIRE(rebuilt.dequantize() == back);
        REQUIRE(rebuilt.stored_bits() == q.stored_bits());
    }
}

TEST_CASE("trellis matrix: rotated power-of-two rows decode by the formula of docs/format.md, 4.8") {
    for (const std::size_t cols : {std::size_t{16}, std::size_t{64}, std::size_t{1024}}) {
        const std::size_t rows = 6;
        const std::vector<float> w = svq::examples::student_t_matrix(rows, cols, 4, cols);
        const svq::trellis_matrix q = svq::quantize_trellis(w, rows, cols, config_of(200, 10, true));
        REQUIRE(q.rotation()->single_hadamard());
        const std::vector<float> back = q.dequantize();
        const std::span<const float> signs = q.rotation()->signs();
        std::vector<int> z(cols);
        for (std::size_t r = 0; r < rows; ++r) {
            q.row_codes(r, z);
            // H_16 on each block's integers, then the float product, the float stages, the signs.
            for (std::size_t b = 0; b < cols; b += 16)
                for (std::size_t half = 1; half < 16; half *= 2)
                    for (std::size_t i = b; i < b + 16; ++i)
                        if ((i & half) == 0) {
                            const int x = z[i], y = z[i + half];
                            z[i] = x + y;
                            z[i + half] = x - y;
                        }
            const float f = q.factor(r) * static_cast<float>(1.0 / std::sqrt(static_cast<double>(cols)));
            std::vector<float> u(cols);
            for (std::size_t i = 0; i < cols; ++i) u[i] = static_cast<float>(z[i]) * f;
            for (std::size_t half = 16; half < cols; half *= 2)
                for (std::size_t i = 0; i < cols; ++i)
                    if ((i & half) == 0) {
                        const float x = u[i], y = u[i + half];
                        u[i] = x + y;
                        u[i + half] = x - y;
                    }
            for (std::size_t i = 0; i < cols; ++i) u[i] *= signs[i];
            INFO("cols " << cols << " row " << r);
            REQUIRE(std::equal(u.begin(), u.end(), back.begin() + static_cast<std::ptrdiff_t>(r * cols)));
            // And R^T (factor z) in double, within a few float roundings.
            q.row_codes(r, z);
            std::vector<double> exact(cols);
            for (std::size_t i = 0; i < cols; ++i) exact[i] = static_cast<double>(q.factor(r)) * z[i];
            q.rotation()->inverse(std::span<double>(exact));
            double err = 0.0, norm = 0.0;
            for (std::size_t i = 0; i < cols; ++i) {
                err = std::max(err, std::fabs(exact[i] - back[r * cols + i]));
                norm = std::max(norm, std::fabs(exact[i]));
            }
            REQUIRE(err <= 1e-6 * norm);
        }
    }
}

TEST_CASE("trellis matrix: an 8 MB output (streaming stores) equals the rows decoded one by one") {
    const std::size_t rows = 512, cols = 4096;
    const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, 8);
    const svq::trellis_matrix q = svq::quantize_trellis(w, rows, cols, config_of(192, 8, true), 2);
    for (const unsigned threads : {1u, 2u}) {
        std::vector<float> out(rows * cols);
        q.dequantize(out, threads);
        std::vector<float> row(cols);
        for (const std::size_t r : {std::size_t{0}, std::size_t{1}, std::size_t{255}, rows - 1}) {
            q.decode_row(r, row);
            REQUIRE(std::equal(row.begin(), row.end(), out.begin() + static_cast<std::ptrdiff_t>(r * cols)));
        }
        CHECK(svq::sqnr_db(w, std::span<const float>(out)) > 15.8);  // L = 8: measured 16.11 dB
    }
}

TEST_CASE("trellis matrix: gemv and batches against W x in double") {
    for (const std::size_t cols : {std::size_t{1024}, std::size_t{200}}) {
        const std::size_t rows = 70;
        const std::vector<float> w = svq::examples::student_t_matrix(rows, cols, 4, 9);
        const svq::trellis_matrix q = svq::quantize_trellis(w, rows, cols, config_of(208, 12, true));
        const std::vector<float> back = q.dequantize();
        for (const std::size_t batch : {std::size_t{1}, std::size_t{3}, std::size_t{40}}) {
            const std::vector<float> x = svq::examples::gaussian_matrix(batch, cols, 100 + batch);
            for (const unsigned threads : {1u, 2u}) {
                std::vector<float> y(batch * rows);
                if (batch == 1) q.gemv(x, y, threads);
                else q.gemv_batch(x, y, batch, threads);
                for (std::size_t v = 0; v < batch; ++v)
                    for (std::size_t r = 0; r < rows; ++r) {
                        double exact = 0.0, mag = 0.0;
                        for (std::size_t c = 0; c < cols; ++c) {
                            const double p = static_cast<double>(back[r * cols + c]) * x[v * cols + c];
                            exact += p;
                            mag += std::fabs(p);
                        }
                        INFO("cols " << cols << " batch " << batch << " threads " << threads << " row " << r);
                        REQUIRE(std::fabs(y[v * rows + r] - exact) <= 2e-6 * mag);
                    }
            }
        }
    }
}

TEST_CASE("trellis: zero rows, configurations and bad input") {
    // A zero matrix and a zero row decode to exact zeros.
    std::vector<float> w(4 * 64, 0.0f);
    const svq::trellis_matrix zero = svq::quantize_trellis(w, 4, 64, config_of(192, 8, true));
    for (const float v : zero.dequantize()) REQUIRE(v == 0.0f);
    w = svq::examples::gaussian_matrix(4, 64, 2);
    std::fill(w.begin() + 64, w.begin() + 128, 0.0f);
    const std::vector<float> back = svq::quantize_trellis(w, 4, 64, config_of(192, 8, true)).dequantize();
    for (std::size_t c = 0; c < 64; ++c) REQUIRE(back[64 + c] == 0.0f);
    for (const float v : back) REQUIRE(std::isfinite(v));

    using Catch::Contains;
    const auto cfg = config_of(192, 12, true);
    std::vector<float> bad = svq::examples::gaussian_matrix(4, 64, 2);
    bad[70] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(svq::quantize_trellis(bad, 4, 64, cfg), svq::invalid_argument);
    CHECK_THROWS_WITH(svq::quantize_trellis(bad, 4, 64, cfg), Contains("weight (1, 6) = nan"));
    bad[70] = 3e20f;
    CHECK_THROWS_WITH(svq::quantize_trellis(bad, 4, 64, cfg), Contains("above 2^64"));
    CHECK_THROWS_AS(svq::quantize_trellis(w, 4, 63, cfg), svq::invalid_argument);
    CHECK_THROWS_AS(svq::quantize_trellis(w, 0, 64, cfg), svq::invalid_argument);
    CHECK_THROWS_WITH(svq::quantize_trellis(w, 4, 64, config_of(63, 12, true)), Contains("bits_per_64 = 63"));
    CHECK_THROWS_WITH(svq::quantize_trellis(w, 4, 64, config_of(321, 12, true)), Contains("bits_per_64 = 321"));
    CHECK_THROWS_WITH(svq::quantize_trellis(w, 4, 64, config_of(192, 3, true)), Contains("state_bits = 3"));
    CHECK_THROWS_WITH(svq::quantize_trellis(w, 4, 64, config_of(192, 17, true)), Contains("state_bits = 17"));
    CHECK_THROWS_WITH(svq::quantize_trellis(w, 4, 64, config_of(320, 4, true)), Contains("more than state_bits = 4"));
    CHECK_THROWS_WITH(svq::detail::make_trellis_layout(std::size_t{1} << 30, std::size_t{1} << 30, cfg, "test"),
                      Contains("more than 2^56"));
    CHECK_THROWS_AS(svq::detail::make_trellis_layout(std::numeric_limits<std::size_t>::max(), 3, cfg, "test"),
                    svq::overflow_error);

    // Parts of the wrong size or a factor that is not finite.
    const svq::trellis_matrix q = svq::quantize_trellis(w, 4, 64, cfg);
    const std::vector<std::uint8_t> payload(q.payload().begin(), q.payload().end());
    const std::vector<std::uint16_t> factors(q.factors().begin(), q.factors().end());
    std::vector<std::uint8_t> shorter(payload.begin(), payload.end() - 1);
    CHECK_THROWS_AS(svq::trellis_matrix(4, 64, cfg, shorter, factors), svq::corrupt_data);
    CHECK_THROWS_AS(svq::trellis_matrix(4, 64, cfg, payload, std::vector<std::uint16_t>(3, 0)), svq::corrupt_data);
    std::vector<std::uint16_t> nan_factor = factors;
    nan_factor[2] = 0x7f80;  // bfloat16 infinity
    CHECK_THROWS_WITH(svq::trellis_matrix(4, 64, cfg, payload, nan_factor), Contains("factor of row 2 is inf"));
    nan_factor[2] = svq::float_to_bf16(-0x1p97f);  // finite, but 510 times it and a rotation could pass FLT_MAX
    CHECK_THROWS_WITH(svq::trellis_matrix(4, 64, cfg, payload, nan_factor), Contains("factor of row 2"));
    nan_factor[2] = svq::float_to_bf16(0x1p96f);
    CHECK(svq::trellis_matrix(4, 64, cfg, payload, nan_factor).rows() == 4);

    // A moved-from matrix is empty, not a matrix whose parts are gone.
    svq::trellis_matrix a = q;
    const svq::trellis_matrix b = std::move(a);
    CHECK(b.dequantize() == q.dequantize());
    CHECK(a.rows() == 0);  // NOLINT(bugprone-use-after-move): the state a move leaves is what is tested
    CHECK(a.dequantize().empty());
    std::vector<float> out(10), y(4);
    CHECK_THROWS_AS(q.dequantize(out), svq::invalid_argument);
    CHECK_THROWS_AS(q.decode_row(4, std::span<float>(out.data(), 0)), svq::invalid_argument);
    CHECK_THROWS_AS(q.gemv(std::vector<float>(63), y), svq::invalid_argument);
    CHECK_THROWS_AS(q.gemv_batch(std::vector<float>(64), y, 0), svq::invalid_argument);
}

TEST_CASE("trellis_config_for: the largest rate at or below the target") {
    using Catch::Contains;
    for (const double target : {2.0, 3.0, 3.25, 4.0}) {
        const svq::trellis_config c = svq::trellis_config_for(4096, 4096, target);
        const auto bpw = [](const svq::trellis_config& cc) {
            const auto l = svq::detail::make_trellis_layout(4096, 4096, cc, "test");
            return static_cast<double>(l.payload_bytes * 8 + 16 * 4096 + 64) / (4096.0 * 4096.0);
        };
        CHECK(bpw(c) <= target);
        svq::trellis_config up = c;
        ++up.bits_per_64;
        CHECK(bpw(up) > target);
    }
    CHECK(svq::trellis_config_for(4096, 4096, 3.0).bits_per_64 == 191);  // 192 needs 3.0058 with the factors
    CHECK_THROWS_WITH(svq::trellis_config_for(64, 64, 1.0), Contains("the least is"));
    CHECK_THROWS_AS(svq::trellis_config_for(64, 64, std::nan("")), svq::invalid_argument);
}
