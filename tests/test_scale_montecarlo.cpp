// Monte-Carlo checks of the gain quantizer on Gaussian groups, and its comparison with uniform,
// logarithmic and data-fitted grids. Prints the tables that docs/scale.md quotes.
#include "catch.hpp"

#include <svq/scale/scale.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <map>
#include <random>
#include <vector>

namespace {

// Norms of `count` groups of dim iid N(0, 1) values: chi(dim) samples, drawn as the sum of squares of
// Gaussians (what the codec sees), fixed seed per dim.
const std::vector<double>& gaussian_group_norms(unsigned dim, std::size_t count) {
    static std::map<std::pair<unsigned, std::size_t>, std::vector<double>> cache;
    auto& norms = cache[{dim, count}];
    if (norms.empty()) {
        std::mt19937_64 rng(0x5eed0000u + dim);
        std::normal_distribution<double> gauss(0.0, 1.0);
        norms.resize(count);
        for (double& norm : norms) {
            double sum = 0.0;
            for (unsigned i = 0; i < dim; ++i) {
                const double x = gauss(rng);
                sum += x * x;
            }
            norm = std::sqrt(sum);
        }
    }
    return norms;
}

struct error_stats {
    double mse = 0.0;
    double standard_error = 0.0;  // of mse
};

// Mean squared quantization error over samples, with its standard error.
error_stats measure(const svq::scalar_quantizer& q, const std::vector<double>& samples) {
    double sum = 0.0;
    double sum_sq = 0.0;
    for (const double x : samples) {
        const double e = x - q.decode(q.encode(x));
        sum += e * e;
        sum_sq += e * e * e * e;
    }
    const double n = static_cast<double>(samples.size());
    const double mean = sum / n;
    return {mean, std::sqrt(std::max(0.0, sum_sq / n - mean * mean) / n)};
}

// Mean and standard error of the per-sample difference of squared errors, a - b (paired).
error_stats paired_difference(const svq::scalar_quantizer& a, const svq::scalar_quantizer& b,
                              const std::vector<double>& samples) {
    double sum = 0.0;
    double sum_sq = 0.0;
    for (const double x : samples) {
        const double ea = x - a.decode(a.encode(x));
        const double eb = x - b.decode(b.encode(x));
        const double diff = ea * ea - eb * eb;
        sum += diff;
        sum_sq += diff * diff;
    }
    const double n = static_cast<double>(samples.size());
    const double mean = sum / n;
    return {mean, std::sqrt(std::max(0.0, sum_sq / n - mean * mean) / n)};
}

double db(double signal, double noise) { return 10.0 * std::log10(signal / noise); }

}  // namespace

TEST_CASE("Monte-Carlo MSE of the optimal chi quantizer matches expected_mse") {
    constexpr unsigned dim = 16;
    const std::vector<double>& norms = gaussian_group_norms(dim, 1000000);
    const svq::density d = svq::chi_density(dim);
    for (unsigned bits = 1; bits <= 8; ++bits) {
        const svq::scalar_quantizer q = svq::optimal_chi_quantizer(dim, bits);
        const double predicted = svq::expected_mse(q, d);
        const error_stats measured = measure(q, norms);
        CAPTURE(bits, predicted, measured.mse, measured.standard_error);
        const double gap = std::abs(measured.mse - predicted);
        REQUIRE((gap <= 0.02 * predicted || gap <= 5.0 * measured.standard_error));
        REQUIRE(gap <= 5.0 * measured.standard_error);
    }
}

TEST_CASE("Monte-Carlo MSE of the optimal Beta-norm quantizer matches expected_mse") {
    // Rows of 64 iid Gaussians cut into 8 groups of 8: ||group|| / ||row|| follows the Beta-norm law
    // exactly. Groups of one row are dependent (their squares sum to 1), so the standard error is
    // taken over per-row averages.
    constexpr unsigned dim = 8;
    constexpr unsigned row_len = 64;
    constexpr std::size_t rows = 125000;
    std::mt19937_64 rng(77);
    std::normal_distribution<double> gauss(0.0, 1.0);
    std::vector<double> shares(rows * (row_len / dim));
    std::vector<double> row(row_len);
    for (std::size_t r = 0; r < rows; ++r) {
        double total = 0.0;
        for (double& x : row) {
            x = gauss(rng);
            total += x * x;
        }
        for (unsigned g = 0; g < row_len / dim; ++g) {
            double group = 0.0;
            for (unsigned i = 0; i < dim; ++i) group += row[g * dim + i] * row[g * dim + i];
            shares[r * (row_len / dim) + g] = std::sqrt(group / total);
        }
    }
    const svq::density d = svq::beta_norm_density(dim, row_len);
    for (unsigned bits = 2; bits <= 6; ++bits) {
        const svq::scalar_quantizer q = svq::optimal_beta_norm_quantizer(dim, row_len, bits);
        const double predicted = svq::expected_mse(q, d);
        double sum = 0.0;
        double sum_sq = 0.0;
        for (std::size_t r = 0; r < rows; ++r) {
            double row_sum = 0.0;
            for (unsigned g = 0; g < row_len / dim; ++g) {
                const double s = shares[r * (row_len / dim) + g];
                const double e = s - q.decode(q.encode(s));
                row_sum += e * e;
            }
            const double row_mean = row_sum / (row_len / dim);
            sum += row_mean;
            sum_sq += row_mean * row_mean;
        }
        const double measured = sum / rows;
        const double standard_error = std::sqrt((sum_sq / rows - measured * measured) / rows);
        CAPTURE(bits, predicted, measured, standard_error);
        const double gap = std::abs(measured - predicted);
        REQUIRE((gap <= 0.02 * predicted || gap <= 5.0 * standard_error));
    }
}

TEST_CASE("optimal gain levels beat the best uniform and log grids and match data-fitted Lloyd") {
    // The table for docs/scale.md: SQNR of x against g_hat x / ||x|| (pure gain distortion) on
    // Gaussian groups, predicted by integration and measured on 2^18 groups per N.
    constexpr std::size_t groups = std::size_t{1} << 18;
    std::printf("\nGain-only SQNR, dB: 10 log10(sum ||x||^2 / sum (||x|| - g_hat)^2), %zu Gaussian groups per N\n",
                groups);
    std::printf("predicted (integration) / measured (Monte-Carlo); lloyd_fit is fitted on the same samples\n\n");
    std::printf(
        "| N | bits | optimal | uniform (best range) | log (best range) | lloyd_fit | opt - uniform | opt - log |\n");
    std::printf("|---|---|---|---|---|---|---|---|\n");
    for (const unsigned dim : {16u, 32u, 64u}) {
        const std::vector<double>& norms = gaussian_group_norms(dim, groups);
        double energy = 0.0;
        for (const double n : norms) energy += n * n;
        energy /= static_cast<double>(norms.size());
        const svq::density d = svq::chi_density(dim);
        for (unsigned bits = 2; bits <= 6; ++bits) {
            CAPTURE(dim, bits);
            const svq::scalar_quantizer optimal = svq::optimal_chi_quantizer(dim, bits);
            const svq::scalar_quantizer uniform = svq::best_uniform_quantizer(d, bits);
            const svq::scalar_quantizer logarithmic = svq::best_log_quantizer(d, bits);
            const svq::scalar_quantizer fitted = svq::lloyd_fit(norms, bits);

            const double e_opt = svq::expected_mse(optimal, d);
            const double e_uni = svq::expected_mse(uniform, d);
            const double e_log = svq::expected_mse(logarithmic, d);
            REQUIRE(e_opt < e_uni);
            REQUIRE(e_opt < e_log);
            // Lloyd-Max is the optimum: no other quantizer's expected error is lower.
            REQUIRE(e_opt <= svq::expected_mse(fitted, d) * (1.0 + 1e-9));

            const error_stats m_opt = measure(optimal, norms);
            const error_stats m_uni = measure(uniform, norms);
            const error_stats m_log = measure(logarithmic, norms);
            const error_stats m_fit = measure(fitted, norms);
            REQUIRE(m_opt.mse < m_uni.mse);
            REQUIRE(m_opt.mse < m_log.mse);
            // Fitted in-sample, lloyd_fit may win by overfitting, but only within the noise.
            const error_stats opt_minus_fit = paired_difference(optimal, fitted, norms);
            CAPTURE(opt_minus_fit.mse, opt_minus_fit.standard_error);
            REQUIRE(opt_minus_fit.mse <= 5.0 * opt_minus_fit.standard_error + 1e-12);
            REQUIRE(m_fit.mse <= m_opt.mse * (1.0 + 1e-9));  // in-sample Lloyd is a local optimum on the data

            const double signal = static_cast<double>(dim);  // E ||x||^2
            std::printf("| %u | %u | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f | - / %.2f | %.2f | %.2f |\n", dim, bits,
                        db(signal, e_opt), db(energy, m_opt.mse), db(signal, e_uni), db(energy, m_uni.mse),
                        db(signal, e_log), db(energy, m_log.mse), db(energy, m_fit.mse), db(e_uni, e_opt),
                        db(e_log, e_opt));
        }
    }
    std::fflush(stdout);
}

TEST_CASE("how many gain bits: gain SQNR of chi(N) against bits") {
    // Zero bits: the best single level is E[chi], leaving Var[chi] ~ 1/2, so gain SQNR ~ 10 log10(2N).
    std::printf("\nPredicted gain-only SQNR (dB) of the optimal chi(N) quantizer; 0 bits = the fixed level E[chi]\n\n");
    std::printf("| N | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (const unsigned dim : {8u, 16u, 32u, 64u, 128u, 256u}) {
        CAPTURE(dim);
        const svq::density d = svq::chi_density(dim);
        const double mean = std::sqrt(2.0) * std::exp(std::lgamma(0.5 * (dim + 1)) - std::lgamma(0.5 * dim));
        const double variance = dim - mean * mean;
        const double zero_bit = db(dim, variance);
        REQUIRE(zero_bit == Catch::Approx(db(2.0 * dim, 1.0)).margin(0.2));
        std::printf("| %u | %.1f", dim, zero_bit);
        double previous = zero_bit;
        for (unsigned bits = 1; bits <= 8; ++bits) {
            const double sqnr = db(dim, svq::expected_mse(svq::optimal_chi_quantizer(dim, bits), d));
            CAPTURE(bits, sqnr, previous);
            // Each bit is worth between the 1-bit Gaussian 4.4 dB and the high-rate 6.02 dB.
            REQUIRE(sqnr - previous > 4.3);
            REQUIRE(sqnr - previous < 6.03);
            std::printf(" | %.1f", sqnr);
            previous = sqnr;
        }
        std::printf(" |\n");
    }
    std::fflush(stdout);
}

TEST_CASE("total SQNR of x_hat = g_hat u: the optimal gain quantizer beats uniform and log grids at 2..6 bits") {
    // What the matrix codec does with a group's gain (include/svq/matrix/quantized_matrix.hpp): rows of
    // row_len iid N(0, 1) weights cut into groups of dim, gain g = ||x|| normalised by the row scale
    // s = ||row|| / sqrt(row_len), so t = g / s = sqrt(row_len) * sqrt(Beta(dim/2, (row_len - dim)/2)),
    // quantized, and x_hat = s Q(t) u with u = x / ||x|| exact. Total SQNR is over every weight:
    // 10 log10(sum x^2 / sum (x - x_hat)^2). Every grid is designed for the same Beta-norm density (the
    // uniform and log grids with their best range) and scaled by sqrt(row_len).
    // Prediction: s^2 and t are independent (a Gaussian row's norm is independent of its direction), so
    // E||x - x_hat||^2 = E[s^2] E[(t - Q(t))^2] = row_len * mse_beta and total SQNR = dim / (row_len * mse_beta).
    constexpr unsigned row_len = 4096;
    constexpr std::size_t group_count = std::size_t{1} << 17;  // per N: rows = group_count * N / row_len
    std::printf(
        "\nTotal SQNR, dB, of x_hat = s Q(g / s) u (u exact), %zu groups per N in Gaussian rows of %u, Beta-norm gain "
        "model\n",
        group_count, row_len);
    std::printf("predicted (integration) / measured (Monte-Carlo)\n\n");
    std::printf("| N | bits | optimal | uniform (best range) | log (best range) | opt - uniform | opt - log |\n");
    std::printf("|---|---|---|---|---|---|---|\n");
    for (const unsigned dim : {8u, 16u, 32u, 64u}) {
        const unsigned groups = row_len / dim;
        const std::size_t rows = group_count / groups;
        std::mt19937_64 rng(0xb07a0000u + dim);
        std::normal_distribution<double> gauss(0.0, 1.0);
        std::vector<double> weights(rows * row_len);
        for (double& w : weights) w = gauss(rng);
        // Per group: its norm g and its row's scale s.
        std::vector<double> norms(rows * groups);
        std::vector<double> scales(rows);
        double signal = 0.0;
        for (std::size_t r = 0; r < rows; ++r) {
            double row_energy = 0.0;
            for (unsigned j = 0; j < groups; ++j) {
                double energy = 0.0;
                for (unsigned i = 0; i < dim; ++i)
                    energy += weights[r * row_len + j * dim + i] * weights[r * row_len + j * dim + i];
                norms[r * groups + j] = std::sqrt(energy);
                row_energy += energy;
            }
            scales[r] = std::sqrt(row_energy / row_len);
            signal += row_energy;
        }
        const svq::density d = svq::beta_norm_density(dim, row_len);
        const double unit = std::sqrt(static_cast<double>(row_len));
        for (unsigned bits = 2; bits <= 6; ++bits) {
            CAPTURE(dim, bits);
            const svq::scalar_quantizer designs[3] = {svq::optimal_beta_norm_quantizer(dim, row_len, bits),
                                                      svq::best_uniform_quantizer(d, bits),
                                                      svq::best_log_quantizer(d, bits)};
            double predicted_db[3];
            double measured_db[3];
            // Per-row error of each quantizer: rows are independent, so the paired per-row differences
            // give an honest standard error.
            std::vector<double> row_error[3];
            for (int m = 0; m < 3; ++m) {
                const double mse_beta = svq::expected_mse(designs[m], d);
                predicted_db[m] = db(dim, row_len * mse_beta);
                const svq::scalar_quantizer q = designs[m].scaled(unit);
                row_error[m].assign(rows, 0.0);
                double noise = 0.0;
                for (std::size_t r = 0; r < rows; ++r) {
                    for (unsigned j = 0; j < groups; ++j) {
                        const double g = norms[r * groups + j];
                        const double g_hat = scales[r] * q.decode(q.encode(g / scales[r]));
                        // x_hat = g_hat * x / g: the error of the whole group vector, weight by weight.
                        double e = 0.0;
                        for (unsigned i = 0; i < dim; ++i) {
                            const double x = weights[r * row_len + j * dim + i];
                            const double diff = x - g_hat * x / g;
                            e += diff * diff;
                        }
                        row_error[m][r] += e;
                    }
                    noise += row_error[m][r];
                }
                measured_db[m] = db(signal, noise);
                // Monte-Carlo agrees with the prediction: mean row error within 5 standard errors.
                double sum_sq = 0.0;
                for (const double e : row_error[m]) sum_sq += e * e;
                const double mean = noise / static_cast<double>(rows);
                const double standard_error = std::sqrt(
                    std::max(0.0, sum_sq / static_cast<double>(rows) - mean * mean) / static_cast<double>(rows));
                const double predicted_row = static_cast<double>(groups) * row_len * mse_beta;
                CAPTURE(m, predicted_db[m], measured_db[m], mean, predicted_row, standard_error);
                REQUIRE(std::abs(mean - predicted_row) <= 5.0 * standard_error);
            }
            for (int m = 1; m < 3; ++m) {
                REQUIRE(predicted_db[0] > predicted_db[m]);
                REQUIRE(measured_db[0] > measured_db[m]);
                // The measured advantage is significant: paired per-row difference > 3 standard errors.
                double sum = 0.0;
                double sum_sq = 0.0;
                for (std::size_t r = 0; r < rows; ++r) {
                    const double diff = row_error[m][r] - row_error[0][r];
                    sum += diff;
                    sum_sq += diff * diff;
                }
                const double mean = sum / static_cast<double>(rows);
                const double standard_error = std::sqrt(
                    std::max(0.0, sum_sq / static_cast<double>(rows) - mean * mean) / static_cast<double>(rows));
                CAPTURE(m, mean, standard_error);
                REQUIRE(mean > 3.0 * standard_error);
            }
            std::printf("| %u | %u | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f | %.2f | %.2f |\n", dim, bits,
                        predicted_db[0], measured_db[0], predicted_db[1], measured_db[1], predicted_db[2],
                        measured_db[2], predicted_db[0] - predicted_db[1], predicted_db[0] - predicted_db[2]);
        }
    }
    std::fflush(stdout);
}
