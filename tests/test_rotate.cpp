#include "catch.hpp"

#include <svq/rotate/hadamard_rotation.hpp>

#include <svq/core/eigen.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

// Portable test data (same values on every standard library).
std::vector<double> gaussian_doubles(std::size_t n, std::uint64_t seed) {
    svq::detail::normal_sampler normal(seed);
    std::vector<double> values(n);
    for (auto& v : values) v = normal.next();
    return values;
}

// Student-t with 4 degrees of freedom: z / sqrt(chi2_4 / 4).
std::vector<float> student_t4(std::size_t n, std::uint64_t seed) {
    svq::detail::normal_sampler normal(seed);
    std::vector<float> values(n);
    for (auto& v : values) {
        const double z = normal.next();
        double chi2 = 0.0;
        for (int k = 0; k < 4; ++k) {
            const double g = normal.next();
            chi2 += g * g;
        }
        v = static_cast<float>(z / std::sqrt(chi2 / 4.0));
    }
    return values;
}

template <class T>
std::vector<T> as(const std::vector<double>& values) {
    return std::vector<T>(values.begin(), values.end());
}

template <class A, class B>
double relative_difference(const A& a, const B& b) {
    double diff = 0.0;
    double norm = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
        diff += d * d;
        norm += static_cast<double>(b[i]) * static_cast<double>(b[i]);
    }
    return std::sqrt(diff / norm);
}

template <class A>
double norm(const A& a) {
    double sum = 0.0;
    for (const auto v : a) sum += static_cast<double>(v) * static_cast<double>(v);
    return std::sqrt(sum);
}

double excess_kurtosis(const std::vector<float>& values);
double excess_kurtosis_of(const std::vector<float>& values) { return excess_kurtosis(values); }

// Dense R, column j = forward(e_j), in double.
Eigen::MatrixXd dense_rotation(const svq::hadamard_rotation& rotation) {
    const std::size_t dim = rotation.dim();
    Eigen::MatrixXd r(static_cast<Eigen::Index>(dim), static_cast<Eigen::Index>(dim));
    std::vector<double> unit(dim);
    for (std::size_t j = 0; j < dim; ++j) {
        std::fill(unit.begin(), unit.end(), 0.0);
        unit[j] = 1.0;
        rotation.forward(std::span<double>(unit));
        for (std::size_t i = 0; i < dim; ++i) r(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) = unit[i];
    }
    return r;
}

// Same, through the float path.
Eigen::MatrixXd dense_rotation_float(const svq::hadamard_rotation& rotation) {
    const std::size_t dim = rotation.dim();
    Eigen::MatrixXd r(static_cast<Eigen::Index>(dim), static_cast<Eigen::Index>(dim));
    std::vector<float> unit(dim);
    for (std::size_t j = 0; j < dim; ++j) {
        std::fill(unit.begin(), unit.end(), 0.0F);
        unit[j] = 1.0F;
        rotation.forward(unit);
        for (std::size_t i = 0; i < dim; ++i) r(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) = unit[i];
    }
    return r;
}

// Pooled excess kurtosis after dividing each row by its own RMS: the tails a
// per-row (or per-group) scale sees, without the spread of row scales.
double row_normalized_kurtosis(const std::vector<float>& matrix, std::size_t rows) {
    const std::size_t dim = matrix.size() / rows;
    std::vector<float> normalized(matrix.size());
    for (std::size_t r = 0; r < rows; ++r) {
        double energy = 0.0;
        for (std::size_t j = 0; j < dim; ++j) energy += static_cast<double>(matrix[r * dim + j]) * matrix[r * dim + j];
        const double rms = std::sqrt(energy / static_cast<double>(dim));
        for (std::size_t j = 0; j < dim; ++j) normalized[r * dim + j] = static_cast<float>(matrix[r * dim + j] / rms);
    }
    return excess_kurtosis_of(normalized);
}

double excess_kurtosis(const std::vector<float>& values) {
    double mean = 0.0;
    for (const float v : values) mean += v;
    mean /= static_cast<double>(values.size());
    double m2 = 0.0;
    double m4 = 0.0;
    for (const float v : values) {
        const double d = v - mean;
        m2 += d * d;
        m4 += d * d * d * d;
    }
    m2 /= static_cast<double>(values.size());
    m4 /= static_cast<double>(values.size());
    return m4 / (m2 * m2) - 3.0;
}

const std::vector<std::size_t> all_dims = {1, 2, 3, 7, 64, 172, 4096, 11008, 14336};

}  // namespace

TEST_CASE("splitmix64 reproduces the reference stream") {
    // First outputs of the reference splitmix64.c for seed 0.
    svq::detail::splitmix64 generator(0);
    CHECK(generator.next() == 0xe220a8397b1dcdafULL);
    CHECK(generator.next() == 0x6e789e6aa1b965f4ULL);
    CHECK(generator.next() == 0x06c45d188009454fULL);
    // derive_seed(seed, k) is output k of splitmix64(seed).
    svq::detail::splitmix64 stream(12345);
    for (std::uint64_t k = 0; k < 5; ++k) CHECK(svq::detail::derive_seed(12345, k) == stream.next());
}

TEST_CASE("Box-Muller sampler gives standard normal moments") {
    svq::detail::normal_sampler normal(99);
    const std::size_t n = 400000;
    double sum = 0.0;
    double sum2 = 0.0;
    double sum4 = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        const double z = normal.next();
        sum += z;
        sum2 += z * z;
        sum4 += z * z * z * z;
    }
    // Standard errors: mean 1/sqrt(n) = 0.0016, variance sqrt(2/n) = 0.0022, E z^4 sqrt(96/n) = 0.015.
    CHECK(std::abs(sum / n) < 0.008);
    CHECK(std::abs(sum2 / n - 1.0) < 0.011);
    CHECK(std::abs(sum4 / n - 3.0) < 0.08);
}

TEST_CASE("hadamard_rotation: inverse undoes forward and the norm is kept") {
    for (const std::size_t dim : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{7}, std::size_t{64},
                                  std::size_t{172}, std::size_t{4096}, std::size_t{11008}, std::size_t{14336},
                                  std::size_t{1031}, std::size_t{2062}}) {
        CAPTURE(dim);
        const svq::hadamard_rotation rotation(dim, 0x5eed + dim);
        REQUIRE(rotation.dim() == dim);
        const std::vector<float> input = as<float>(gaussian_doubles(dim, dim));
        std::vector<float> values = input;
        rotation.forward(values);
        CHECK(std::abs(norm(values) - norm(input)) <= 1e-6 * norm(input));
        CHECK(relative_difference(values, input) > (dim == 1 ? -1.0 : 1e-3));  // it did move (dim 1: R = +-1)
        rotation.inverse(values);
        CHECK(relative_difference(values, input) <= 1e-6);

        // The scratch-taking forms give the same values as the allocating ones.
        std::vector<float> scratch(rotation.scratch_size());
        std::vector<float> with_scratch = input;
        std::vector<float> allocating = input;
        rotation.forward(with_scratch, scratch);
        rotation.forward(allocating);
        CHECK(with_scratch == allocating);
        rotation.inverse(with_scratch, scratch);
        rotation.inverse(allocating);
        CHECK(with_scratch == allocating);

        // Double path: same R, to double precision.
        const std::vector<double> input_double = gaussian_doubles(dim, dim + 1);
        std::vector<double> values_double = input_double;
        rotation.forward(std::span<double>(values_double));
        CHECK(std::abs(norm(values_double) - norm(input_double)) <= 1e-13 * norm(input_double));
        std::vector<float> values_float = as<float>(input_double);
        rotation.forward(values_float);
        CHECK(relative_difference(values_float, values_double) <= 1e-6);
        rotation.inverse(std::span<double>(values_double));
        CHECK(relative_difference(values_double, input_double) <= 1e-13);
    }
}

TEST_CASE("hadamard_rotation equals a dense orthogonal R built column by column") {
    for (const std::size_t dim : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{7}, std::size_t{64},
                                  std::size_t{172}, std::size_t{384}, std::size_t{512}}) {
        CAPTURE(dim);
        const svq::hadamard_rotation rotation(dim, 77);
        const Eigen::MatrixXd r = dense_rotation(rotation);
        const auto n = static_cast<Eigen::Index>(dim);
        CHECK((r.transpose() * r - Eigen::MatrixXd::Identity(n, n)).cwiseAbs().maxCoeff() <= 1e-12);
        CHECK((r * r.transpose() - Eigen::MatrixXd::Identity(n, n)).cwiseAbs().maxCoeff() <= 1e-12);

        const Eigen::MatrixXd r_float = dense_rotation_float(rotation);
        CHECK((r_float.transpose() * r_float - Eigen::MatrixXd::Identity(n, n)).cwiseAbs().maxCoeff() <= 1e-5);
        CHECK((r_float - r).cwiseAbs().maxCoeff() <= 1e-6);

        const std::vector<double> x = gaussian_doubles(dim, 3 * dim);
        const Eigen::VectorXd x_vec = Eigen::Map<const Eigen::VectorXd>(x.data(), n);
        const Eigen::VectorXd expected_forward = r * x_vec;
        const Eigen::VectorXd expected_inverse = r.transpose() * x_vec;
        std::vector<float> forward = as<float>(x);
        std::vector<float> inverse = as<float>(x);
        rotation.forward(forward);
        rotation.inverse(inverse);
        CHECK(relative_difference(forward, expected_forward) <= 1e-6);
        CHECK(relative_difference(inverse, expected_inverse) <= 1e-6);
    }
}

TEST_CASE("hadamard_rotation has the documented Kronecker structure") {
    SECTION("power of two: every entry is +-1/sqrt(dim), the first row is the sign pattern") {
        const svq::hadamard_rotation rotation(64, 2024);
        const Eigen::MatrixXd r = dense_rotation(rotation);
        CHECK((r.cwiseAbs().array() - 0.125).abs().maxCoeff() == 0.0);
        // Row 0 of H D / 8 is D / 8: D's signs are the bits of stream 0 of the seed, lowest bit first.
        const std::uint64_t word = svq::detail::splitmix64(svq::detail::derive_seed(2024, 0)).next();
        std::size_t matching = 0;
        for (std::size_t j = 0; j < 64; ++j) matching += (r(0, static_cast<Eigen::Index>(j)) < 0) == (((word >> j) & 1U) == 1U);
        CHECK(matching == 64);
    }
    SECTION("172 = 43 x 4: |R| is constant on each 4 x 4 tile (|Q_ik| / 2)") {
        const svq::hadamard_rotation rotation(172, 5);
        const Eigen::MatrixXd r = dense_rotation(rotation);
        double spread = 0.0;
        for (Eigen::Index ti = 0; ti < 43; ++ti) {
            for (Eigen::Index tk = 0; tk < 43; ++tk) {
                const Eigen::MatrixXd tile = r.block(4 * ti, 4 * tk, 4, 4).cwiseAbs();
                spread = std::max(spread, tile.maxCoeff() - tile.minCoeff());
            }
        }
        CHECK(spread <= 1e-14);
    }
    SECTION("odd part above max_dense_factor: two block-diagonal layers") {
        // 1031 = 1024 + 7: layer one mixes [0, 1024) and [1024, 1031), layer two
        // [0, 7) and [7, 1031). Outputs 0..6 therefore never see inputs 1024..1030;
        // every other entry is non-zero.
        const svq::hadamard_rotation rotation(1031, 8);
        const Eigen::MatrixXd r = dense_rotation(rotation);
        CHECK((r.transpose() * r - Eigen::MatrixXd::Identity(1031, 1031)).cwiseAbs().maxCoeff() <= 1e-12);
        std::size_t zeros_expected_place = 0;
        std::size_t zeros_elsewhere = 0;
        for (Eigen::Index i = 0; i < 1031; ++i) {
            for (Eigen::Index k = 0; k < 1031; ++k) {
                if (r(i, k) != 0.0) continue;
                if (i < 7 && k >= 1024) ++zeros_expected_place;
                else ++zeros_elsewhere;
            }
        }
        CHECK(zeros_expected_place == 7 * 7);
        CHECK(zeros_elsewhere == 0);
    }
}

TEST_CASE("forward_rows and inverse_rows apply forward and inverse to each row") {
    for (const std::size_t dim : {std::size_t{3}, std::size_t{172}, std::size_t{4096}, std::size_t{11008}}) {
        CAPTURE(dim);
        const std::size_t rows = 5;
        const svq::hadamard_rotation rotation(dim, 11);
        const std::vector<float> matrix = student_t4(rows * dim, dim);
        std::vector<float> by_rows = matrix;
        rotation.forward_rows(by_rows, rows);
        std::vector<float> one_by_one = matrix;
        for (std::size_t r = 0; r < rows; ++r) rotation.forward(std::span<float>(one_by_one).subspan(r * dim, dim));
        CHECK(by_rows == one_by_one);
        rotation.inverse_rows(by_rows, rows);
        for (std::size_t r = 0; r < rows; ++r) rotation.inverse(std::span<float>(one_by_one).subspan(r * dim, dim));
        CHECK(by_rows == one_by_one);
        CHECK(relative_difference(by_rows, matrix) <= 1e-6);
    }
    const svq::hadamard_rotation rotation(8, 1);
    std::vector<float> empty;
    rotation.forward_rows(empty, 0);  // zero rows: nothing to do, no throw
    CHECK(empty.empty());
}

TEST_CASE("rotated weights times rotated input equal the original product") {
    for (const std::size_t dim : {std::size_t{172}, std::size_t{4096}, std::size_t{11008}}) {
        CAPTURE(dim);
        const std::size_t rows = 8;
        const svq::hadamard_rotation rotation(dim, 3);
        const std::vector<float> w = student_t4(rows * dim, 100 + dim);
        const std::vector<float> x = as<float>(gaussian_doubles(dim, 200 + dim));
        std::vector<double> y(rows, 0.0);
        for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t j = 0; j < dim; ++j) y[r] += static_cast<double>(w[r * dim + j]) * x[j];
        }
        std::vector<float> w_rotated = w;  // W R^T
        rotation.forward_rows(w_rotated, rows);
        std::vector<float> x_rotated = x;  // R x
        rotation.forward(x_rotated);
        std::vector<double> y_rotated(rows, 0.0);
        for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t j = 0; j < dim; ++j) y_rotated[r] += static_cast<double>(w_rotated[r * dim + j]) * x_rotated[j];
        }
        // Error scale: each rotated factor carries ~1e-7 relative error, and
        // |W x| is ~1/sqrt(dim) of |W||x| for random data.
        double scale = 0.0;
        for (std::size_t r = 0; r < rows; ++r) {
            double row_norm = 0.0;
            for (std::size_t j = 0; j < dim; ++j) row_norm += static_cast<double>(w[r * dim + j]) * w[r * dim + j];
            scale = std::max(scale, std::sqrt(row_norm) * norm(x));
        }
        for (std::size_t r = 0; r < rows; ++r) CHECK(std::abs(y_rotated[r] - y[r]) <= 1e-6 * scale);
    }
}

TEST_CASE("conjugate gives R H R^T and keeps the trace") {
    for (const std::size_t dim : {std::size_t{1}, std::size_t{3}, std::size_t{7}, std::size_t{64}, std::size_t{172},
                                  std::size_t{200}}) {
        CAPTURE(dim);
        const auto n = static_cast<Eigen::Index>(dim);
        const svq::hadamard_rotation rotation(dim, 21);
        const Eigen::MatrixXd r = dense_rotation(rotation);
        // H = X^T X / tokens from correlated activations (a random mixing of Gaussian columns).
        const std::size_t tokens = 2 * dim + 8;
        const std::vector<double> raw = gaussian_doubles(tokens * dim, 31 + dim);
        Eigen::MatrixXd x = Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
            raw.data(), static_cast<Eigen::Index>(tokens), n);
        x.col(0) *= 10.0;  // one outlier channel, as in real activations
        const Eigen::MatrixXd hessian = x.transpose() * x / static_cast<double>(tokens);

        for (const bool symmetric : {true, false}) {
            CAPTURE(symmetric);
            Eigen::MatrixXd h = hessian;
            if (!symmetric) h(0, n - 1) += 1.5;  // conjugate must not assume symmetry
            Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> h_rows = h;
            rotation.conjugate(std::span<double>(h_rows.data(), dim * dim));
            const Eigen::MatrixXd expected = r * h * r.transpose();
            CHECK((h_rows - expected).norm() <= 1e-12 * h.norm());
            CHECK(std::abs(h_rows.trace() - h.trace()) <= 1e-12 * std::abs(h.trace()));
        }
    }
}

TEST_CASE("the seed determines R") {
    for (const std::size_t dim : {std::size_t{7}, std::size_t{172}, std::size_t{4096}}) {
        CAPTURE(dim);
        const std::vector<float> x = as<float>(gaussian_doubles(dim, 5));
        std::vector<float> first = x;
        std::vector<float> again = x;
        std::vector<float> other = x;
        svq::hadamard_rotation(dim, 1234).forward(first);
        const svq::hadamard_rotation same(dim, 1234);
        CHECK(same.seed() == 1234);
        same.forward(again);
        svq::hadamard_rotation(dim, 1235).forward(other);
        CHECK(first == again);
        // Two independent rotations of x are nearly orthogonal vectors of the same norm: difference ~ sqrt(2) |x|.
        CHECK(relative_difference(other, first) > 0.5);
    }
}

TEST_CASE("rotation makes Student-t(4) rows Gaussian-like") {
    // Measured with these seeds (docs/rotation.md): 256 x 4096 before 20.6, after 0.005;
    // 64 x 11008 (dense factor 43) and 64 x 14336 (dense factor 7) land at the same level.
    struct shape {
        std::size_t rows, dim;
    };
    for (const shape s : {shape{256, 4096}, shape{64, 11008}, shape{64, 14336}}) {
        CAPTURE(s.rows, s.dim);
        std::vector<float> w = student_t4(s.rows * s.dim, 4242);
        const double before = excess_kurtosis(w);
        svq::hadamard_rotation(s.dim, 1).forward_rows(w, s.rows);
        const double after = excess_kurtosis(w);
        WARN("excess kurtosis " << s.rows << " x " << s.dim << ": before " << before << ", after " << after);
        CHECK(before > 1.0);
        CHECK(std::abs(after) < 0.2);
    }
}

TEST_CASE("rotation on the trained stories260K weights") {
    const std::string path = std::string(SVQ_DATA_DIR) + "/stories260K.bin";
    std::ifstream file(path, std::ios::binary);
    if (!file) {
        WARN("skipped: " << path << " not found");
        return;
    }
    std::int32_t header[7];
    file.read(reinterpret_cast<char*>(header), sizeof(header));
    const std::size_t dim = static_cast<std::size_t>(header[0]);
    const std::size_t hidden = static_cast<std::size_t>(header[1]);
    const std::size_t layers = static_cast<std::size_t>(header[2]);
    const std::size_t kv_dim = dim * static_cast<std::size_t>(header[4]) / static_cast<std::size_t>(header[3]);
    const std::size_t vocab = static_cast<std::size_t>(header[5]);
    REQUIRE(dim == 64);
    REQUIRE(hidden == 172);
    auto read = [&](std::size_t count) {
        std::vector<float> values(count);
        file.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(count * sizeof(float)));
        REQUIRE(file.good());
        return values;
    };
    read(vocab * dim);                          // token embedding
    read(layers * dim);                         // rms_att
    std::vector<float> wq = read(layers * dim * dim);
    read(layers * kv_dim * dim);                // wk
    read(layers * kv_dim * dim);                // wv
    read(layers * dim * dim);                   // wo
    read(layers * dim);                         // rms_ffn
    read(layers * hidden * dim);                // w1
    std::vector<float> w2 = read(layers * dim * hidden);

    // wq rows have 64 inputs (pure Hadamard), w2 rows have 172 = 43 x 4 inputs (dense factor 43).
    // The whole-matrix kurtosis of these weights comes from rows of different scale, which a
    // rotation within each row keeps (it preserves row norms), so the figure that must move
    // toward the Gaussian value 0 is the kurtosis of the row-normalized weights.
    const std::size_t rows = layers * dim;
    const std::vector<float> wq_original = wq;
    const std::vector<float> w2_original = w2;
    const double wq_before = row_normalized_kurtosis(wq, rows);
    const double w2_before = row_normalized_kurtosis(w2, rows);
    svq::hadamard_rotation(dim, 7).forward_rows(wq, rows);
    svq::hadamard_rotation(hidden, 7).forward_rows(w2, rows);
    const double wq_after = row_normalized_kurtosis(wq, rows);
    const double w2_after = row_normalized_kurtosis(w2, rows);
    WARN("stories260K row-normalized excess kurtosis: wq " << wq_before << " -> " << wq_after << ", w2 "
                                                           << w2_before << " -> " << w2_after
                                                           << " (whole-matrix: wq " << excess_kurtosis(wq_original)
                                                           << " -> " << excess_kurtosis(wq) << ")");
    CHECK(std::abs(wq_after) < 0.15);
    CHECK(std::abs(w2_after) < 0.15);
    CHECK(std::abs(w2_after) < std::abs(w2_before));
    CHECK(relative_difference(w2, w2_original) > 0.5);  // the rotation did change the weights
    svq::hadamard_rotation(dim, 7).inverse_rows(wq, layers * dim);
    CHECK(relative_difference(wq, wq_original) <= 1e-6);
}

TEST_CASE("hadamard_rotation rejects bad arguments with the offending value") {
    REQUIRE_THROWS_AS(svq::hadamard_rotation(0, 1), svq::invalid_argument);
    REQUIRE_THROWS_WITH(svq::hadamard_rotation(0, 1), "hadamard_rotation: dim must be >= 1, got 0");
    const svq::hadamard_rotation rotation(172, 1);
    std::vector<float> wrong(171);
    REQUIRE_THROWS_AS(rotation.forward(wrong), svq::invalid_argument);
    REQUIRE_THROWS_AS(rotation.inverse(wrong), svq::invalid_argument);
    REQUIRE_THROWS_WITH(rotation.forward(wrong), "hadamard_rotation::forward: vector has 171 values, dim is 172");
    std::vector<double> wrong_double(173);
    REQUIRE_THROWS_AS(rotation.forward(std::span<double>(wrong_double)), svq::invalid_argument);
    std::vector<float> matrix(3 * 172 + 1);
    REQUIRE_THROWS_AS(rotation.forward_rows(matrix, 3), svq::invalid_argument);
    REQUIRE_THROWS_WITH(rotation.inverse_rows(matrix, 3),
                        "hadamard_rotation::inverse_rows: matrix has 517 values, expected rows=3 x dim=172");
    REQUIRE_THROWS_AS(rotation.forward_rows(matrix, SIZE_MAX / 2), svq::invalid_argument);
    std::vector<double> hessian(172 * 171);
    REQUIRE_THROWS_AS(rotation.conjugate(hessian), svq::invalid_argument);
    std::vector<float> v(172);
    std::vector<float> small_scratch(rotation.scratch_size() - 1);
    REQUIRE_THROWS_WITH(rotation.forward(v, small_scratch), "hadamard_rotation::forward: scratch has 171 values, needs 172");
    // Power-of-two dims need no scratch at all.
    CHECK(svq::hadamard_rotation(4096, 1).scratch_size() == 0);
    CHECK(svq::hadamard_rotation(11008, 1).scratch_size() == 11008);
}
