// Composition through concepts (concepts.hpp): the matrix codec over a
// user's gain quantizers and a user's shape code, the two searches, one
// quantize with its options, and the QuantizedMatrix concept's products.
#include "catch.hpp"
#include "oracle/split_lattice.hpp"
#include "support.hpp"

#include <common/synthetic.hpp>
#include <svq/svq.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <type_traits>
#include <vector>

namespace {

using svq::test::explicit_config;

// A user's gain quantizer: 2^bits uniform levels on [0, 2 sqrt(dim)] (the
// normalised gains of a group of dim weights have mean square dim).
struct uniform_gain {
    unsigned bits_ = 1;
    double step = 1.0;
    unsigned bits() const { return bits_; }
    std::uint32_t encode(double v) const {
        const double c = std::floor(v / step);
        return static_cast<std::uint32_t>(std::clamp(c, 0.0, static_cast<double>((1u << bits_) - 1)));
    }
    double decode(std::uint32_t code) const { return (code + 0.5) * step; }
};
struct uniform_gains {
    uniform_gain make(std::size_t dim, std::size_t, unsigned bits) const {
        return {bits, 2.0 * std::sqrt(static_cast<double>(dim)) / static_cast<double>(1u << bits)};
    }
};

// A user's shape code: the split order written as its definition
// (tests/oracle/split_lattice.hpp) behind the word interface ShapeCode asks for.
template <class Index>
class oracle_shape {
public:
    oracle_shape(std::size_t dim, std::size_t pulses)
        : lattice_(dim, pulses), bits_(svq::pvq_index_bits(dim, pulses)), limbs_(std::max<std::size_t>(1, (bits_ + 63) / 64)) {}
    std::size_t dim() const { return lattice_.dim(); }
    std::size_t pulses() const { return lattice_.pulses(); }
    std::size_t index_bits() const { return bits_; }
    std::size_t limbs() const { return limbs_; }
    void rank(const int* y, std::uint64_t* index) const {
        svq::detail::index_to_limbs(lattice_.rank(std::span<const int>(y, dim())), index, limbs_);
    }
    void unrank(const std::uint64_t* index, int* y) const {
        lattice_.unrank(svq::detail::index_from_limbs<Index>(index, limbs_), std::span<int>(y, dim()));
    }
    bool in_range(const std::uint64_t* index) const {
        return svq::detail::index_from_limbs<Index>(index, limbs_) < lattice_.size();
    }

private:
    svq::oracle::pvq_split_lattice<Index> lattice_;
    std::size_t bits_, limbs_;
};

// Types that miss one operation.
struct no_decode_gain {
    unsigned bits() const { return 1; }
    std::uint32_t encode(double) const { return 0; }
};
struct no_decode_gains {
    no_decode_gain make(std::size_t, std::size_t, unsigned) const { return {}; }
};
struct no_in_range_shape {
    no_in_range_shape(std::size_t, std::size_t) {}
    std::size_t dim() const { return 1; }
    std::size_t pulses() const { return 1; }
    std::size_t index_bits() const { return 1; }
    std::size_t limbs() const { return 1; }
    void rank(const int*, std::uint64_t*) const {}
    void unrank(const std::uint64_t*, int*) const {}
};

// y = W x in double from a dense row-major W.
std::vector<double> dense_product(const std::vector<float>& w, std::size_t rows, std::size_t cols,
                                  std::span<const float> x) {
    std::vector<double> y(rows, 0.0);
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c) y[r] += static_cast<double>(w[r * cols + c]) * x[c];
    return y;
}

// max |gemv - W x| / max |W x| over a batch of random vectors, and whether
// the batched product equals the one-vector products bit for bit.
template <svq::QuantizedMatrix M>
std::pair<double, bool> product_check(const M& m, std::uint64_t seed) {
    const std::size_t rows = m.rows(), cols = m.cols(), batch = 3;
    const std::vector<float> x = svq::examples::gaussian_matrix(batch, cols, seed);
    const std::vector<float> wq = m.dequantize();
    std::vector<float> y(batch * rows), one(rows);
    m.gemv_batch(x, y, batch, 2);
    double err = 0.0, scale = 0.0;
    bool same = true;
    for (std::size_t b = 0; b < batch; ++b) {
        const std::span<const float> xb(x.data() + b * cols, cols);
        const std::vector<double> ref = dense_product(wq, rows, cols, xb);
        m.gemv(xb, one);
        same = same && std::memcmp(one.data(), y.data() + b * rows, rows * sizeof(float)) == 0;
        for (std::size_t r = 0; r < rows; ++r) {
            err = std::max(err, std::fabs(y[b * rows + r] - ref[r]));
            scale = std::max(scale, std::fabs(ref[r]));
        }
    }
    return {err / scale, same};
}

}  // namespace

TEST_CASE("concepts accept svq's parts and reject a part missing one operation") {
    STATIC_REQUIRE(svq::GainQuantizers<svq::beta_gain_quantizers>);
    STATIC_REQUIRE(svq::GainQuantizers<uniform_gains>);
    STATIC_REQUIRE(svq::ScaleQuantizer<uniform_gain>);
    STATIC_REQUIRE_FALSE(svq::GainQuantizers<no_decode_gains>);
    STATIC_REQUIRE(svq::ShapeCode<svq::pvq_split_index>);
    STATIC_REQUIRE(svq::ShapeCode<oracle_shape<svq::wide_uint<512>>>);
    STATIC_REQUIRE_FALSE(svq::ShapeCode<no_in_range_shape>);
    STATIC_REQUIRE(svq::MatrixSearch<svq::mse_search, svq::row_format>);
    STATIC_REQUIRE(svq::MatrixSearch<svq::hessian_search, svq::row_format>);
    STATIC_REQUIRE_FALSE(svq::MatrixSearch<svq::gptq_options, svq::row_format>);
    STATIC_REQUIRE(svq::QuantizedMatrix<svq::quantized_matrix>);
    STATIC_REQUIRE(svq::QuantizedMatrix<svq::basic_quantized_matrix<svq::basic_row_format<svq::pvq_split_index, uniform_gains>>>);
    STATIC_REQUIRE(svq::QuantizedMatrix<svq::rtn_matrix>);
    STATIC_REQUIRE(svq::QuantizedMatrix<svq::trellis_matrix>);
    STATIC_REQUIRE_FALSE(svq::QuantizedMatrix<svq::matrix_layout>);
    // The fast decoder reads its matrix's words: built from a temporary it would dangle, so it cannot be.
    STATIC_REQUIRE(std::is_constructible_v<svq::matrix_decoder, const svq::quantized_matrix&>);
    STATIC_REQUIRE_FALSE(std::is_constructible_v<svq::matrix_decoder, svq::quantized_matrix&&>);
    STATIC_REQUIRE_FALSE(std::is_constructible_v<svq::matrix_decoder, svq::quantized_matrix>);
}

TEST_CASE("a user's gain quantizer plugs into the matrix codec without editing svq") {
    const std::size_t rows = 48, cols = 256;
    const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, 7);
    using uniform_format = svq::basic_row_format<svq::pvq_split_index, uniform_gains>;
    for (const svq::matrix_config& c : {explicit_config(32, 21, 3, 16, false), explicit_config(16, 12, 2, 8, true)}) {
        CAPTURE(svq::to_string(c));
        const auto q = svq::quantize_with<uniform_format>(w, rows, cols, c);
        const svq::quantized_matrix ref = svq::quantize(w, rows, cols, c);
        // The same layout and bits; the gains decode through the user's levels.
        REQUIRE(q.words().size() == ref.layout().payload_words());
        REQUIRE(q.stored_bits() == ref.stored_bits());
        for (std::uint32_t code = 0; code < (1u << c.gain_bits); ++code)
            REQUIRE(q.format().gain_level(0, code) == uniform_gains{}.make(c.group_dim, cols, c.gain_bits).decode(code));
        // It works (the error a uniform quantizer of these gains should give),
        // and the optimal levels of format version 3 are at least as good.
        const double uniform_db = svq::sqnr_db(w, q.dequantize());
        const double optimal_db = svq::sqnr_db(w, ref.dequantize());
        CHECK(uniform_db > optimal_db - 1.5);
        CHECK(optimal_db >= uniform_db - 0.05);
        // Rebuilt from its stored parts with the same gains, it decodes to the same floats.
        const svq::basic_quantized_matrix<uniform_format> back(rows, cols, c, q.reference_scale(),
                                                               std::vector<std::uint64_t>(q.words().begin(), q.words().end()));
        REQUIRE(back.dequantize() == q.dequantize());
        // The Hessian search composes with it too: with H = I it is the plain search.
        std::vector<double> h(cols * cols, 0.0);
        for (std::size_t i = 0; i < cols; ++i) h[i * cols + i] = 1.0;
        const auto qh = svq::quantize_with<uniform_format>(w, rows, cols, c, svq::hessian_search{h});
        CHECK(std::equal(qh.words().begin(), qh.words().end(), q.words().begin(), q.words().end()));
    }
}

TEST_CASE("a user's shape code plugs in: the split order's definition gives the same stored words") {
    using oracle_format = svq::basic_row_format<oracle_shape<svq::wide_uint<512>>>;
    for (const auto& [rows, cols, c] : {std::tuple{16, 128, explicit_config(32, 21, 4, 16, true)},
                                        std::tuple{12, 200, explicit_config(64, 60, 3, 16, false)},  // a tail group
                                        std::tuple{8, 256, explicit_config(128, 160, 3, 8, true)}}) {   // wide indices
        CAPTURE(svq::to_string(c));
        const std::vector<float> w = svq::examples::student_t_matrix(rows, cols, 4, 11);
        const auto q = svq::quantize_with<oracle_format>(w, rows, cols, c);
        const svq::quantized_matrix ref = svq::quantize(w, rows, cols, c);
        REQUIRE(std::equal(q.words().begin(), q.words().end(), ref.words().begin(), ref.words().end()));
        REQUIRE(q.dequantize() == ref.dequantize());
    }
}

TEST_CASE("quantize with one options struct: explicit or chosen configuration, plain or Hessian, any thread count") {
    const std::size_t rows = 40, cols = 128;
    const std::vector<float> w = svq::examples::gaussian_matrix(rows, cols, 3);
    const svq::matrix_config c = explicit_config(16, 22, 4, 16, true);
    const svq::quantized_matrix one = svq::quantize(w, rows, cols, {.config = c});
    REQUIRE(one.words().size() == svq::quantize(w, rows, cols, c).words().size());
    REQUIRE(std::ranges::equal(one.words(), svq::quantize(w, rows, cols, c).words()));
    // Threads split rows; the words do not depend on how many. Progress reaches (rows, rows), rising.
    std::vector<std::size_t> seen;
    const svq::quantized_matrix three = svq::quantize(
        w, rows, cols, {.config = c, .threads = 3, .progress = [&](std::size_t done, std::size_t total) {
                            REQUIRE(total == rows);
                            seen.push_back(done);
                        }});
    REQUIRE(std::ranges::equal(three.words(), one.words()));
    REQUIRE(!seen.empty());
    REQUIRE(seen.back() == rows);
    REQUIRE(std::is_sorted(seen.begin(), seen.end()));
    // A target picks the configuration choose_config picks.
    const svq::quantized_matrix chosen = svq::quantize(w, rows, cols, {.target_bpw = 3.0});
    REQUIRE(chosen.config() == svq::choose_config(w, rows, cols, 3.0).config);
    REQUIRE(chosen.bits_per_weight() <= 3.0);
    // A Hessian: the Hessian search, whatever the thread count.
    std::vector<double> h(cols * cols, 0.0);
    std::mt19937_64 rng(5);
    std::normal_distribution<double> normal;
    std::vector<double> x(4 * cols * cols);
    for (double& v : x) v = normal(rng);
    for (std::size_t i = 0; i < cols; ++i)
        for (std::size_t j = 0; j < cols; ++j)
            for (std::size_t s = 0; s < 4 * cols; ++s) h[i * cols + j] += x[s * cols + i] * x[s * cols + j];
    const svq::quantized_matrix hq = svq::quantize(w, rows, cols, {.config = c, .hessian = h});
    const svq::quantized_matrix hq2 = svq::quantize(w, rows, cols, {.config = c, .hessian = h, .threads = 2});
    REQUIRE(std::ranges::equal(hq.words(), hq2.words()));
    CHECK(svq::proxy_loss(w, hq.dequantize(), rows, cols, h) < svq::proxy_loss(w, one.dequantize(), rows, cols, h));
    // Exactly one of config and target.
    REQUIRE_THROWS_AS(svq::quantize(w, rows, cols, svq::quantize_options{}), svq::invalid_argument);
    REQUIRE_THROWS_WITH(svq::quantize(w, rows, cols, {.config = c, .target_bpw = 3.0}),
                        Catch::Contains("exactly one") && Catch::Contains("target_bpw 3"));
    REQUIRE_THROWS_AS(svq::quantize(w, rows, cols, {.config = c, .hessian = std::span<const double>(h.data(), 10)}),
                      svq::invalid_argument);
}

TEST_CASE("every quantized matrix has gemv and gemv_batch, equal to the product with its reconstruction") {
    const std::size_t rows = 37, cols = 200;
    const std::vector<float> w = svq::examples::student_t_matrix(rows, cols, 5, 21);
    for (const svq::matrix_config& c :
         {explicit_config(32, 21, 4, 16, true), explicit_config(64, 60, 3, 8, false), explicit_config(8, 10, 3, 16, true)}) {
        CAPTURE(svq::to_string(c));
        const auto [err, same] = product_check(svq::quantize(w, rows, cols, c), 1);
        CHECK(err < 1e-5);
        CHECK(same);
    }
    const auto [err, same] = product_check(svq::rtn_quantize(w, rows, cols, {4, 32}), 2);
    CHECK(err < 1e-5);
    CHECK(same);
    const svq::quantized_matrix q = svq::quantize(w, rows, cols, explicit_config(32, 21, 4, 16, true));
    std::vector<float> x(cols), y(rows);
    REQUIRE_THROWS_WITH(q.gemv(std::span<const float>(x.data(), cols - 1), y), Catch::Contains("x has 199 entries"));
    REQUIRE_THROWS_WITH(q.gemv_batch(x, y, 0), Catch::Contains("batch must be >= 1"));
    REQUIRE_THROWS_WITH(svq::rtn_quantize(w, rows, cols, {4, 32}).gemv(x, std::span<float>(y.data(), 3)),
                        Catch::Contains("y has 3 entries"));
}

TEST_CASE("CRVQ takes threads and a progress callback; its matrices are QuantizedMatrix") {
    STATIC_REQUIRE(svq::QuantizedMatrix<svq::crvq_matrix<svq::kmeans_base>>);
    STATIC_REQUIRE(svq::QuantizedMatrix<svq::crvq_matrix<svq::pvq_base>>);
    const std::size_t rows = 64, cols = 96;
    const std::vector<float> w1 = svq::examples::student_t_matrix(rows, cols, 4, 31);
    const std::vector<float> w2 = svq::examples::student_t_matrix(rows, cols, 4, 32);
    const std::vector<svq::crvq_layer> layers = {{w1, rows, cols, {}}, {w2, rows, cols, {}}};
    svq::crvq_config<svq::pvq_base> c;
    c.base.config = explicit_config(32, 8, 2, 16, true);
    c.extended_codebooks = 2;
    c.extended_bits = 6;
    c.critical_fraction = 0.1;
    c.refine_rounds = 1;
    std::vector<std::size_t> seen;
    c.progress = [&](std::size_t done, std::size_t total) {
        REQUIRE(total == layers.size() + c.extended_codebooks + c.refine_rounds + 1);
        seen.push_back(done);
    };
    const svq::crvq_model<svq::pvq_base> one = svq::crvq_quantize(layers, c);
    REQUIRE(seen.size() == layers.size() + c.extended_codebooks + c.refine_rounds + 1);
    REQUIRE(seen.back() == seen.size());
    c.threads = 2;
    c.progress = nullptr;
    const svq::crvq_model<svq::pvq_base> two = svq::crvq_quantize(layers, c);
    for (std::size_t l = 0; l < layers.size(); ++l) {
        REQUIRE(one.matrices[l].dequantize() == two.matrices[l].dequantize());
        // The generic measure over any QuantizedMatrix is the SQNR of its reconstruction.
        CHECK(svq::sqnr_db(layers[l].w, one.matrices[l]) ==
              svq::sqnr_db(layers[l].w, std::span<const float>(one.matrices[l].dequantize())));
        CHECK(svq::sqnr_db(layers[l].w, one.matrices[l]) > 5.0);
    }
}
