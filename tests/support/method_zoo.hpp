// One quantized matrix of every storable method over one Gaussian matrix:
// plain PVQ (16-bit and 8-bit row scales), Hessian-searched PVQ, RTN, CRVQ
// with a k-means and with a PVQ base, trellis (not rotated, 3 or 4 bits per
// weight in turn: an independent reader can decode it). Shared by the file tests
// (tests/test_io.cpp), the Python reader's fixture (tests/support/io_fixture.cpp)
// and the fuzz seed corpus (fuzz/make_corpus.cpp), so the three store the same
// kinds of results built the same way.
#pragma once

#include <svq/crvq/crvq.hpp>
#include <svq/matrix/rtn.hpp>
#include <svq/quantize.hpp>
#include <svq/trellis/trellis.hpp>

#include "../support.hpp"

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace svq::test {

// n iid N(0, scale^2) floats from a fixed seed (std::mt19937_64).
inline std::vector<float> gaussian(std::size_t n, std::uint64_t seed, float scale = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
}

// What differs between the zoo of the tests and the smaller one of the corpus.
struct zoo_shape {
    std::size_t rows = 24, cols = 72;
    matrix_config plain8 = explicit_config(32, 30, 5, 8, false);  // the 8-bit row scale matrix
    std::size_t rtn_group = 32;
    unsigned kmeans_bits = 6;    // the k-means base codebook's bits per vector
    unsigned extended_bits = 4;  // each CRVQ extended codebook's
};

// The corpus's: small inputs keep the fuzzer fast.
inline zoo_shape small_zoo_shape() { return {8, 40, explicit_config(8, 12, 5, 8, false), 16, 4, 3}; }

struct method_zoo {
    explicit method_zoo(const zoo_shape& s = {})
        : rows(s.rows),
          cols(s.cols),
          w(gaussian(rows * cols, 11)),
          plain(quantize(w, rows, cols, explicit_config(16, 20, 4, 16, true))),
          plain8(quantize(w, rows, cols, s.plain8)),
          hessian(quantize(w, rows, cols, {.config = explicit_config(8, 12, 4, 16, true), .hessian = calibration(cols)})),
          rtn(rtn_quantize(w, rows, cols, {4, s.rtn_group})),
          ck(crvq_quantize(w, rows, cols, {}, kmeans_config(s))),
          cp(crvq_quantize(w, rows, cols, {}, pvq_config(s))),
          trellis(quantize_trellis(w, rows, cols, {.bits_per_64 = 200, .state_bits = 8, .rotate = false})) {}

    std::size_t rows, cols;
    std::vector<float> w;
    quantized_matrix plain, plain8, hessian;
    rtn_matrix rtn;
    crvq_model<kmeans_base> ck;
    crvq_model<pvq_base> cp;
    trellis_matrix trellis;

    // X^T X of 4 * cols Gaussian samples.
    static std::vector<double> calibration(std::size_t cols) {
        std::vector<double> h(cols * cols, 0.0);
        const std::vector<float> x = gaussian(4 * cols * cols, 12);
        for (std::size_t s = 0; s < 4 * cols; ++s)
            for (std::size_t i = 0; i < cols; ++i)
                for (std::size_t j = 0; j < cols; ++j) h[i * cols + j] += double{x[s * cols + i]} * x[s * cols + j];
        return h;
    }
    static crvq_config<kmeans_base> kmeans_config(const zoo_shape& s) {
        crvq_config<kmeans_base> c;
        c.base.dim = 4;
        c.base.bits = s.kmeans_bits;
        c.base.row_scale_bits = 8;
        c.extended_codebooks = 2;
        c.extended_dim = 4;
        c.extended_bits = s.extended_bits;
        c.critical_fraction = 0.1;
        return c;
    }
    static crvq_config<pvq_base> pvq_config(const zoo_shape& s) {
        crvq_config<pvq_base> c;
        c.base.config = explicit_config(8, 10, 4, 16, false);
        c.extended_codebooks = 1;
        c.extended_dim = 4;
        c.extended_bits = s.extended_bits;
        c.critical_fraction = 0.05;
        return c;
    }
};

}  // namespace svq::test
