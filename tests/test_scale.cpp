// Tests of the gain (scale) quantizer: scalar_quantizer, the integrator, the chi and Beta-norm
// densities, and the Lloyd-Max optimality conditions checked against an independent integration.
// Monte-Carlo checks and the comparison with uniform / log / data-fitted grids are in
// test_scale_montecarlo.cpp.
#include "catch.hpp"

#include <svq/scale/scale.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numbers>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

// Plain composite Simpson rule with n (even) intervals: the test's own integrator, independent of
// svq::detail's Gauss-Legendre panels.
double simpson(const std::function<double(double)>& f, double a, double b, int n) {
    const double h = (b - a) / n;
    double sum = f(a) + f(b);
    for (int i = 1; i < n; ++i) sum += (i % 2 == 1 ? 4.0 : 2.0) * f(a + h * i);
    return sum * h / 3.0;
}

// The test's own densities, written from the textbook formulas.
double test_chi_pdf(unsigned dim, double x) {
    if (x <= 0.0) return dim == 1 && x == 0.0 ? std::sqrt(2.0 / std::numbers::pi) : 0.0;
    const double n = dim;
    const double log_value =
        (n - 1.0) * std::log(x) - 0.5 * x * x - (0.5 * n - 1.0) * std::log(2.0) - std::lgamma(0.5 * n);
    return std::exp(log_value);
}

// Defined on the closed interval: at s = 0 (dim = 1, s^0 = 1) and s = 1 (row_len = dim + 2,
// (1 - s^2)^0 = 1) the density is finite and non-zero, and std::pow gives those limits. Returning 0
// at the ends instead drops Simpson's end term h/3 f(end) from a cell's mass, a relative error of
// 1/(3 n) = 1.7e-4 with n = 2000 intervals: what the centroid check used to report for dim = 1.
double test_beta_norm_pdf(unsigned dim, unsigned row_len, double s) {
    if (s < 0.0 || s > 1.0) return 0.0;
    const double a = 0.5 * dim;
    const double b = 0.5 * (row_len - dim);
    const double log_beta = std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b);
    return 2.0 * std::pow(s, 2.0 * a - 1.0) * std::pow(1.0 - s * s, b - 1.0) / std::exp(log_beta);
}

// Largest grid point of [0, end] where pdf exceeds 1e-30 of its maximum there: the test's own range.
double support_end(const std::function<double(double)>& pdf, double end) {
    constexpr int points = 100000;
    double peak = 0.0;
    for (int i = 0; i <= points; ++i) peak = std::max(peak, pdf(end * i / points));
    for (int i = points; i >= 0; --i) {
        if (pdf(end * i / points) > 1e-30 * peak) return std::min(end, end * (i + 1) / points);
    }
    return end;
}

// Checks the centroid condition: each level is the mean of pdf over its cell within rel_tol,
// the cells ending at 0 and `end`. Returns the largest relative deviation seen.
double check_centroids(const svq::scalar_quantizer& q, const std::function<double(double)>& pdf, double end,
                       double rel_tol) {
    const auto levels = q.levels();
    const auto thresholds = q.thresholds();
    double worst = 0.0;
    for (std::size_t i = 0; i < levels.size(); ++i) {
        const double a = i == 0 ? 0.0 : thresholds[i - 1];
        const double b = i + 1 == levels.size() ? end : thresholds[i];
        const double mass = simpson(pdf, a, b, 2000);
        const double first = simpson([&](double x) { return x * pdf(x); }, a, b, 2000);
        const double centroid = first / mass;
        const double deviation = std::abs(levels[i] - centroid) / std::abs(centroid);
        worst = std::max(worst, deviation);
        if (deviation > rel_tol) {
            INFO("cell " << i << " [" << a << ", " << b << "] level " << levels[i] << " centroid " << centroid);
            CHECK(deviation <= rel_tol);
        }
    }
    return worst;
}

// True when fn throws svq::invalid_argument whose message contains `value`.
template <class F>
bool throws_invalid_naming(F&& fn, const std::string& value) {
    try {
        fn();
    } catch (const svq::invalid_argument& e) {
        const std::string what = e.what();
        INFO(what);
        return what.find(value) != std::string::npos;
    }
    return false;
}

}  // namespace

TEST_CASE("scalar_quantizer validates its levels") {
    REQUIRE_THROWS_AS(svq::scalar_quantizer({}), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::scalar_quantizer({1.0, 2.0, 3.0}), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::scalar_quantizer({1.0, 1.0}), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::scalar_quantizer({2.0, 1.0}), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::scalar_quantizer({0.0, std::numeric_limits<double>::quiet_NaN()}), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::scalar_quantizer({0.0, std::numeric_limits<double>::infinity()}), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::scalar_quantizer(std::vector<double>(std::size_t{1} << 17)), svq::invalid_argument);
    REQUIRE(throws_invalid_naming([] { svq::scalar_quantizer({0.0, 1.0, 0.5, 2.0}); }, "0.5"));
    REQUIRE(throws_invalid_naming([] { svq::scalar_quantizer({1.0, 2.0, 3.0}); }, "3 levels"));

    const svq::scalar_quantizer fixed({4.0});
    REQUIRE(fixed.bits() == 0);
    REQUIRE(fixed.thresholds().empty());
    REQUIRE(fixed.encode(-100.0) == 0);
    REQUIRE(fixed.decode(0) == 4.0);
}

TEST_CASE("scalar_quantizer encodes to the nearest level and decodes back") {
    std::mt19937_64 rng(20240611);
    for (unsigned bits = 1; bits <= 10; ++bits) {
        // Random strictly increasing levels.
        std::uniform_real_distribution<double> gap(0.01, 1.0);
        std::vector<double> levels(std::size_t{1} << bits);
        double x = -3.0;
        for (double& level : levels) level = (x += gap(rng));
        const svq::scalar_quantizer q(levels);
        REQUIRE(q.bits() == bits);
        REQUIRE(q.size() == levels.size());
        REQUIRE(q.thresholds().size() == levels.size() - 1);
        for (std::size_t i = 0; i + 1 < levels.size(); ++i) {
            REQUIRE(q.thresholds()[i] == Catch::Approx(0.5 * (levels[i] + levels[i + 1])).epsilon(1e-15));
        }
        // Round trip: every level encodes to its own code.
        for (std::uint32_t code = 0; code < levels.size(); ++code) REQUIRE(q.encode(q.decode(code)) == code);
        // Against brute force: the nearest level, ties to the lower one.
        std::uniform_real_distribution<double> value(levels.front() - 1.0, levels.back() + 1.0);
        for (int trial = 0; trial < 2000; ++trial) {
            const double v = value(rng);
            std::uint32_t best = 0;
            for (std::uint32_t c = 1; c < levels.size(); ++c) {
                if (std::abs(v - levels[c]) < std::abs(v - levels[best])) best = c;
            }
            REQUIRE(q.encode(v) == best);
        }
        // A value exactly on a threshold takes the lower level.
        REQUIRE(q.encode(q.thresholds()[0]) == 0);
        REQUIRE_THROWS_AS(q.decode(static_cast<std::uint32_t>(levels.size())), svq::corrupt_data);
    }
}

TEST_CASE("scalar_quantizer batch encode/decode and scaled copies") {
    const svq::scalar_quantizer q({0.5, 1.5, 2.5, 4.0});
    const std::vector<double> values = {-1.0, 0.99, 1.01, 2.0, 3.2, 3.3, 100.0};
    std::vector<std::uint32_t> codes(values.size());
    q.encode(values, codes);
    REQUIRE(codes == std::vector<std::uint32_t>{0, 0, 1, 1, 2, 3, 3});
    std::vector<double> decoded(codes.size());
    q.decode(codes, decoded);
    REQUIRE(decoded == std::vector<double>{0.5, 0.5, 1.5, 1.5, 2.5, 4.0, 4.0});
    std::vector<std::uint32_t> short_codes(3);
    REQUIRE_THROWS_AS(q.encode(values, short_codes), svq::invalid_argument);
    const std::vector<std::uint32_t> bad_codes = {1, 4};
    std::vector<double> two(2);
    REQUIRE_THROWS_AS(q.decode(bad_codes, two), svq::corrupt_data);

    const svq::scalar_quantizer doubled = q.scaled(2.0);
    REQUIRE(doubled.bits() == q.bits());
    for (std::size_t i = 0; i < q.size(); ++i) REQUIRE(doubled.levels()[i] == 2.0 * q.levels()[i]);
    for (std::size_t i = 0; i + 1 < q.size(); ++i) REQUIRE(doubled.thresholds()[i] == 2.0 * q.thresholds()[i]);
    for (const double v : values) REQUIRE(doubled.encode(2.0 * v) == q.encode(v));
    REQUIRE(q.scaled(1.0) == q);
    REQUIRE_THROWS_AS(q.scaled(0.0), svq::invalid_argument);
    REQUIRE_THROWS_AS(q.scaled(-1.0), svq::invalid_argument);
    REQUIRE_THROWS_AS(q.scaled(std::numeric_limits<double>::infinity()), svq::invalid_argument);
    REQUIRE(throws_invalid_naming([&] { (void)q.scaled(-3.25); }, "-3.25"));
}

TEST_CASE("10-point Gauss-Legendre is exact to degree 19 and no further") {
    for (int degree = 0; degree <= 19; ++degree) {
        const double integral = svq::detail::gauss_legendre([&](double x) { return std::pow(x, degree); }, 0.0, 2.0);
        REQUIRE(integral == Catch::Approx(std::pow(2.0, degree + 1) / (degree + 1)).epsilon(1e-14));
    }
    const double degree20 = svq::detail::gauss_legendre([](double x) { return std::pow(x, 20); }, -1.0, 1.0);
    REQUIRE(std::abs(degree20 - 2.0 / 21.0) > 1e-8);
}

TEST_CASE("chi_pdf matches closed forms and is normalised") {
    const double c = std::sqrt(2.0 / std::numbers::pi);
    for (const double x : {0.0, 0.3, 1.0, 2.5, 6.0}) {
        CAPTURE(x);
        REQUIRE(svq::chi_pdf(1, 1.0, x) == Catch::Approx(c * std::exp(-0.5 * x * x)).epsilon(1e-13));  // half-normal
        REQUIRE(svq::chi_pdf(2, 1.0, x) ==
                Catch::Approx(x * std::exp(-0.5 * x * x)).epsilon(1e-13).margin(1e-300));  // Rayleigh
        REQUIRE(svq::chi_pdf(3, 1.0, x) ==
                Catch::Approx(c * x * x * std::exp(-0.5 * x * x)).epsilon(1e-13).margin(1e-300));  // Maxwell
        REQUIRE(svq::chi_pdf(5, 2.0, 2.0 * x) ==
                Catch::Approx(svq::chi_pdf(5, 1.0, x) / 2.0).epsilon(1e-13).margin(1e-300));
    }
    REQUIRE(svq::chi_pdf(4, 1.0, -1.0) == 0.0);
    REQUIRE(svq::chi_pdf(4, 1.0, std::numeric_limits<double>::infinity()) == 0.0);
    for (const unsigned dim : {1u, 2u, 7u, 64u, 1024u}) {
        CAPTURE(dim);
        const double end = std::sqrt(static_cast<double>(dim)) + 15.0;
        const double mass = simpson([&](double x) { return svq::chi_pdf(dim, 1.0, x); }, 0.0, end, 200000);
        REQUIRE(mass == Catch::Approx(1.0).epsilon(1e-9));
    }
    REQUIRE_THROWS_AS(svq::chi_pdf(0, 1.0, 1.0), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::chi_pdf(3, 0.0, 1.0), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::chi_pdf(3, 1.0, std::numeric_limits<double>::quiet_NaN()), svq::invalid_argument);
}

TEST_CASE("beta_norm_pdf matches closed forms and is normalised") {
    for (const double s : {0.1, 0.5, 0.9}) {
        CAPTURE(s);
        REQUIRE(svq::beta_norm_pdf(2, 4, s) == Catch::Approx(2.0 * s).epsilon(1e-13));  // B ~ Beta(1, 1) uniform
        REQUIRE(svq::beta_norm_pdf(1, 3, s) == Catch::Approx(1.0).epsilon(1e-13));      // Beta(1/2, 1): s uniform
        REQUIRE(svq::beta_norm_pdf(8, 64, s) == Catch::Approx(test_beta_norm_pdf(8, 64, s)).epsilon(1e-12));
    }
    REQUIRE(svq::beta_norm_pdf(8, 64, -0.1) == 0.0);
    REQUIRE(svq::beta_norm_pdf(8, 64, 1.5) == 0.0);
    REQUIRE(std::isinf(svq::beta_norm_pdf(8, 9, 1.0)));  // b = 1/2: infinite (integrable) at 1
    for (const auto& [dim, row_len] : {std::pair{1u, 64u}, {8u, 64u}, {32u, 172u}, {16u, 4096u}, {8u, 10u}}) {
        CAPTURE(dim, row_len);
        const double mass = simpson([&](double s) { return svq::beta_norm_pdf(dim, row_len, s); }, 0.0, 1.0, 400000);
        REQUIRE(mass == Catch::Approx(1.0).epsilon(1e-8));
    }
    REQUIRE_THROWS_AS(svq::beta_norm_pdf(0, 8, 0.5), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::beta_norm_pdf(8, 8, 0.5), svq::invalid_argument);
    REQUIRE(throws_invalid_naming([] { svq::beta_norm_pdf(16, 12, 0.5); }, "row_len 12"));
}

TEST_CASE("density integrates moments and inverts its cdf") {
    for (const unsigned dim : {1u, 8u, 32u, 1024u}) {
        CAPTURE(dim);
        const svq::density d = svq::chi_density(dim);
        // E[chi(n)] = sqrt(2) Gamma((n + 1) / 2) / Gamma(n / 2); the trimmed 2e-20 of mass moves it by less.
        const double mean = std::sqrt(2.0) * std::exp(std::lgamma(0.5 * (dim + 1)) - std::lgamma(0.5 * dim));
        REQUIRE(d.mean() == Catch::Approx(mean).epsilon(1e-10));
        REQUIRE(d.mass() == Catch::Approx(1.0).epsilon(1e-10));
        // E[chi^2] = n.
        REQUIRE(d.integrate(d.lo(), d.hi(), [](double x) { return x * x; }) / d.mass() ==
                Catch::Approx(static_cast<double>(dim)).epsilon(1e-10));
        for (const double p : {1e-9, 1e-3, 0.1, 0.5, 0.77, 0.999, 1.0 - 1e-9}) {
            CAPTURE(p);
            const double x = d.quantile(p);
            REQUIRE(d.cdf(x) == Catch::Approx(p).epsilon(1e-9));
            // The independent check: Simpson from the range's start.
            const double below = simpson([&](double t) { return test_chi_pdf(dim, t); }, d.lo(), x, 20000);
            REQUIRE(below == Catch::Approx(p).epsilon(1e-7).margin(1e-12));
        }
        // The range is cut at the 1e-20 and 1 - 1e-20 quantiles of the untrimmed law.
        const double lower_tail = simpson([&](double t) { return test_chi_pdf(dim, t); }, 0.0, d.lo(), 20000);
        REQUIRE(lower_tail == Catch::Approx(svq::detail::density_tail).epsilon(1e-3));
        const double upper_tail = simpson([&](double t) { return test_chi_pdf(dim, t); }, d.hi(), d.hi() + 10.0, 20000);
        REQUIRE(upper_tail == Catch::Approx(svq::detail::density_tail).epsilon(1e-3));
        REQUIRE(d.upper_quantile(1e-15) == Catch::Approx(d.quantile(1.0 - 1e-15)).epsilon(1e-3));
        REQUIRE(d.upper_quantile(0.3) == Catch::Approx(d.quantile(0.7)).epsilon(1e-12));
    }
    // Densities need a valid interval and a non-negative finite pdf with mass.
    REQUIRE_THROWS_AS(svq::density([](double) { return 1.0; }, 1.0, 1.0), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::density([](double) { return 1.0; }, 0.0, std::numeric_limits<double>::infinity()),
                      svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::density([](double x) { return x - 0.5; }, 0.0, 1.0), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::density([](double) { return 0.0; }, 0.0, 1.0), svq::invalid_argument);
    REQUIRE(throws_invalid_naming([] { svq::density([](double) { return 1.0; }, 2.5, -1.0); }, "2.5"));
    const svq::density unit([](double) { return 1.0; }, 0.0, 1.0);
    REQUIRE_THROWS_AS(unit.quantile(1.5), svq::invalid_argument);
    REQUIRE(unit.quantile(0.25) == Catch::Approx(0.25).epsilon(1e-14));
}

TEST_CASE("Lloyd-Max on known densities reproduces known quantizers") {
    // Uniform density: the uniform grid is the fixed point.
    const svq::scalar_quantizer uniform = svq::lloyd_max([](double) { return 1.0; }, 0.0, 1.0, 4);
    for (std::size_t i = 0; i < uniform.size(); ++i)
        REQUIRE(uniform.levels()[i] == Catch::Approx((i + 0.5) / 16.0).epsilon(1e-12));

    // Gaussian: 1 bit gives +-sqrt(2/pi); Max (1960) tabulates 2 and 3 bits.
    const auto gauss = [](double x) { return std::exp(-0.5 * x * x); };
    const svq::scalar_quantizer one = svq::lloyd_max(gauss, -12.0, 12.0, 1);
    REQUIRE(one.levels()[1] == Catch::Approx(std::sqrt(2.0 / std::numbers::pi)).epsilon(1e-12));
    REQUIRE(svq::expected_mse(one, gauss, -12.0, 12.0) == Catch::Approx(1.0 - 2.0 / std::numbers::pi).epsilon(1e-12));
    const svq::scalar_quantizer two = svq::lloyd_max(gauss, -12.0, 12.0, 2);
    REQUIRE(two.levels()[2] == Catch::Approx(0.4528).margin(1e-4));
    REQUIRE(two.levels()[3] == Catch::Approx(1.510).margin(1e-3));
    REQUIRE(svq::expected_mse(two, gauss, -12.0, 12.0) == Catch::Approx(0.1175).margin(1e-4));
    const svq::scalar_quantizer three = svq::lloyd_max(gauss, -12.0, 12.0, 3);
    REQUIRE(three.levels()[7] == Catch::Approx(2.152).margin(1e-3));
    REQUIRE(svq::expected_mse(three, gauss, -12.0, 12.0) == Catch::Approx(0.03455).margin(1e-4));

    // chi(1) is the half-normal: its 2^b-level optimum is the positive half of the Gaussian 2^(b+1)-level one.
    // The two are solved on different ranges (chi(1) cut at its 1e-20 quantiles, the Gaussian at +-12),
    // so this also bounds what the range cut does to the levels: measured <= 3.1e-12 relative over
    // bits 1..7 (with a 1e-12 cut it was 1.5e-9 at 4 bits and 2e-7 at 7 bits).
    for (unsigned bits = 1; bits <= 7; ++bits) {
        CAPTURE(bits);
        const svq::scalar_quantizer half = svq::optimal_chi_quantizer(1, bits);
        const svq::scalar_quantizer full = svq::lloyd_max(gauss, -12.0, 12.0, bits + 1);
        for (std::size_t i = 0; i < half.size(); ++i) {
            REQUIRE(half.levels()[i] == Catch::Approx(full.levels()[half.size() + i]).epsilon(1e-10));
        }
    }
    // Outermost level of the 32-level Gaussian optimum, from a separate closed-form Lloyd iteration in
    // double (centroid (phi(a) - phi(b)) / (Phi(b) - Phi(a)) with erfc, iterated to a fixed point).
    REQUIRE(svq::optimal_chi_quantizer(1, 4).levels()[15] == Catch::Approx(3.260732493401394).epsilon(1e-12));
}

TEST_CASE("optimal chi quantizer: nearest-neighbour and centroid conditions (independent Simpson)") {
    double worst = 0.0;
    for (const unsigned dim : {8u, 16u, 32u, 64u, 128u}) {
        const auto pdf = [dim](double x) { return test_chi_pdf(dim, x); };
        const double end = support_end(pdf, std::sqrt(static_cast<double>(dim)) + 20.0);
        for (unsigned bits = 2; bits <= 8; ++bits) {
            CAPTURE(dim, bits);
            const svq::scalar_quantizer q = svq::optimal_chi_quantizer(dim, bits);
            REQUIRE(q.bits() == bits);
            for (std::size_t i = 0; i + 1 < q.size(); ++i) {
                REQUIRE(std::abs(q.thresholds()[i] - 0.5 * (q.levels()[i] + q.levels()[i + 1])) <= 1e-12);
            }
            worst = std::max(worst, check_centroids(q, pdf, end, 1e-6));
        }
    }
    WARN("chi: largest relative |level - centroid| over dims 8..128, bits 2..8: " << worst);
    REQUIRE(worst <= 1e-6);
}

TEST_CASE("optimal Beta-norm quantizer: nearest-neighbour and centroid conditions (independent Simpson)") {
    double worst = 0.0;
    for (const auto& [dim, row_len] :
         {std::pair{8u, 64u}, {16u, 4096u}, {32u, 172u}, {1u, 64u}, {64u, 4096u}, {8u, 10u}}) {
        const auto pdf = [dim, row_len](double s) { return test_beta_norm_pdf(dim, row_len, s); };
        const double end = support_end(pdf, 1.0);
        for (unsigned bits = 2; bits <= 8; ++bits) {
            CAPTURE(dim, row_len, bits);
            const svq::scalar_quantizer q = svq::optimal_beta_norm_quantizer(dim, row_len, bits);
            for (std::size_t i = 0; i + 1 < q.size(); ++i) {
                REQUIRE(std::abs(q.thresholds()[i] - 0.5 * (q.levels()[i] + q.levels()[i + 1])) <= 1e-12);
            }
            REQUIRE(q.levels().front() > 0.0);
            REQUIRE(q.levels().back() < 1.0);
            worst = std::max(worst, check_centroids(q, pdf, end, 1e-6));
        }
    }
    WARN("beta-norm: largest relative |level - centroid|: " << worst);
    REQUIRE(worst <= 1e-6);
}

TEST_CASE("Lloyd-Max converges over the whole design range") {
    for (const unsigned dim : {1u, 2u, 8u, 100u, 1024u}) {
        for (const unsigned bits : {1u, 3u, 6u, 10u}) {
            CAPTURE(dim, bits);
            const svq::density d = svq::chi_density(dim);
            const svq::detail::lloyd_max_solution s = svq::detail::solve_lloyd_max(d, bits);
            REQUIRE(s.converged);
            REQUIRE(s.residual <= s.tolerance);
            REQUIRE(s.levels.size() == (std::size_t{1} << bits));
            REQUIRE(s.iterations <= 20);
        }
    }
    // Awkward Beta shapes: one weight left over in the row (density infinite at 1), and b = 1.
    for (const auto& [dim, row_len] : {std::pair{1u, 2u}, {8u, 9u}, {8u, 10u}, {1024u, 1025u}, {1024u, 65536u}}) {
        CAPTURE(dim, row_len);
        const svq::scalar_quantizer q = svq::optimal_beta_norm_quantizer(dim, row_len, 4);
        REQUIRE(q.levels().front() > 0.0);
        REQUIRE(q.levels().back() <= 1.0);
    }
}

TEST_CASE("optimal quantizers scale with sigma and the Beta law tends to chi") {
    for (const unsigned bits : {2u, 5u}) {
        const svq::scalar_quantizer unit = svq::optimal_chi_quantizer(16, bits);
        const svq::scalar_quantizer wide = svq::optimal_chi_quantizer(16, bits, 3.5);
        for (std::size_t i = 0; i < unit.size(); ++i) {
            REQUIRE(wide.levels()[i] == Catch::Approx(3.5 * unit.levels()[i]).epsilon(1e-10));
        }
        // ||group|| / ||row|| * sqrt(row_len) -> chi(dim) as row_len grows; the gap is O(dim / row_len).
        const svq::scalar_quantizer beta =
            svq::optimal_beta_norm_quantizer(16, 1u << 20, bits).scaled(std::sqrt(1 << 20));
        for (std::size_t i = 0; i < unit.size(); ++i) {
            REQUIRE(beta.levels()[i] == Catch::Approx(unit.levels()[i]).epsilon(1e-4));
        }
    }
}

TEST_CASE("expected_mse agrees with an independent integration and falls ~6 dB per bit") {
    const auto pdf = [](double x) { return test_chi_pdf(32, x); };
    double previous = 0.0;
    for (unsigned bits = 1; bits <= 8; ++bits) {
        CAPTURE(bits);
        const svq::scalar_quantizer q = svq::optimal_chi_quantizer(32, bits);
        const double predicted = svq::expected_mse(q, svq::chi_density(32));
        const auto levels = q.levels();
        const auto thresholds = q.thresholds();
        double reference = 0.0;
        for (std::size_t i = 0; i < levels.size(); ++i) {
            const double a = i == 0 ? 0.0 : thresholds[i - 1];
            const double b = i + 1 == levels.size() ? 30.0 : thresholds[i];
            reference += simpson([&](double x) { return (x - levels[i]) * (x - levels[i]) * pdf(x); }, a, b, 4000);
        }
        REQUIRE(predicted == Catch::Approx(reference).epsilon(1e-8));
        if (bits >= 3) {
            const double gain_db = 10.0 * std::log10(previous / predicted);
            CAPTURE(gain_db);
            REQUIRE(gain_db > 5.0);
            REQUIRE(gain_db < 6.03);
        }
        previous = predicted;
    }
}

TEST_CASE("uniform and log grids") {
    const svq::scalar_quantizer u = svq::uniform_quantizer(1.0, 3.0, 2);
    REQUIRE(std::vector<double>(u.levels().begin(), u.levels().end()) == std::vector<double>{1.25, 1.75, 2.25, 2.75});
    const svq::scalar_quantizer g = svq::log_quantizer(1.0, 16.0, 2);
    for (std::size_t i = 0; i < 4; ++i) REQUIRE(g.levels()[i] == Catch::Approx(std::pow(2.0, i + 0.5)).epsilon(1e-14));
}

TEST_CASE("lloyd_fit finds the global optimum on small data and never loses to its start") {
    // Brute force over every partition of 24 sorted samples into 4 contiguous groups (an optimal 1-D
    // quantizer's cells are intervals): C(23, 3) = 1771 partitions.
    std::mt19937_64 rng(99);
    std::gamma_distribution<double> gamma(2.0, 1.0);
    for (int trial = 0; trial < 20; ++trial) {
        CAPTURE(trial);
        std::vector<double> samples(24);
        for (double& x : samples) x = gamma(rng);
        std::vector<double> sorted(samples);
        std::sort(sorted.begin(), sorted.end());
        auto sse = [&](std::size_t a, std::size_t b) {
            double mean = 0.0;
            for (std::size_t i = a; i < b; ++i) mean += sorted[i];
            mean /= static_cast<double>(b - a);
            double sum = 0.0;
            for (std::size_t i = a; i < b; ++i) sum += (sorted[i] - mean) * (sorted[i] - mean);
            return sum;
        };
        double best = std::numeric_limits<double>::infinity();
        const std::size_t n = sorted.size();
        for (std::size_t i = 1; i < n; ++i) {
            for (std::size_t j = i + 1; j < n; ++j) {
                for (std::size_t k = j + 1; k < n; ++k)
                    best = std::min(best, sse(0, i) + sse(i, j) + sse(j, k) + sse(k, n));
            }
        }
        const svq::detail::lloyd_fit_solution fit = svq::detail::solve_lloyd_fit(samples, 2);
        REQUIRE(fit.converged);
        const double fitted = svq::empirical_mse(svq::scalar_quantizer(fit.levels), samples) * static_cast<double>(n);
        REQUIRE(fitted == Catch::Approx(best).epsilon(1e-12));
        // Lloyd from any start only lowers the in-sample error.
        const svq::scalar_quantizer start = svq::uniform_quantizer(sorted.front(), sorted.back(), 2);
        REQUIRE(svq::empirical_mse(svq::lloyd_fit(samples, start), samples) <= svq::empirical_mse(start, samples));
    }
    // Heavily repeated values: 300 samples on 5 distinct values, 4 levels; still a fixed point with
    // levels strictly between the data's extremes.
    std::vector<double> repeated;
    for (int i = 0; i < 300; ++i) repeated.push_back(static_cast<double>(i % 5));
    const svq::scalar_quantizer q = svq::lloyd_fit(repeated, 2);
    REQUIRE(q.levels().front() >= 0.0);
    REQUIRE(q.levels().back() <= 4.0);
    // The optimum merges two neighbouring values into one cell: error 1/4 on 2/5 of the samples.
    REQUIRE(svq::empirical_mse(q, repeated) == Catch::Approx(0.4 * 0.25).epsilon(1e-12));
}

TEST_CASE("invalid arguments are rejected with the offending value") {
    REQUIRE(throws_invalid_naming([] { svq::optimal_chi_quantizer(8, 0); }, "bits 0"));
    REQUIRE(throws_invalid_naming([] { svq::optimal_chi_quantizer(8, 17); }, "bits 17"));
    REQUIRE(throws_invalid_naming([] { svq::optimal_chi_quantizer(0, 4); }, "dim 0"));
    REQUIRE(throws_invalid_naming([] { svq::optimal_chi_quantizer(8, 4, -2.0); }, "-2"));
    REQUIRE(throws_invalid_naming([] { svq::optimal_chi_quantizer(8, 4, std::numeric_limits<double>::quiet_NaN()); },
                                  "nan"));
    REQUIRE(throws_invalid_naming([] { svq::optimal_beta_norm_quantizer(32, 32, 4); }, "row_len 32"));
    REQUIRE(throws_invalid_naming([] { svq::optimal_beta_norm_quantizer(0, 32, 4); }, "dim 0"));
    REQUIRE(throws_invalid_naming([] { svq::optimal_beta_norm_quantizer(8, 64, 20); }, "bits 20"));
    const auto flat = [](double) { return 1.0; };
    REQUIRE(throws_invalid_naming([&] { svq::lloyd_max(flat, 2.0, 1.0, 4); }, "[2, 1]"));
    REQUIRE(
        throws_invalid_naming([&] { svq::lloyd_max(flat, 0.0, std::numeric_limits<double>::infinity(), 4); }, "inf"));
    REQUIRE(throws_invalid_naming([&] { svq::lloyd_max(flat, 0.0, 1.0, 0); }, "bits 0"));
    REQUIRE(throws_invalid_naming([] { svq::uniform_quantizer(1.0, 1.0, 3); }, "[1, 1]"));
    REQUIRE(throws_invalid_naming([] { svq::uniform_quantizer(0.0, 1.0, 17); }, "bits 17"));
    REQUIRE(throws_invalid_naming([] { svq::log_quantizer(-1.0, 1.0, 3); }, "lo -1"));
    REQUIRE(throws_invalid_naming([] { svq::log_quantizer(0.0, 1.0, 3); }, "lo 0"));
    const std::vector<double> few = {1.0, 2.0, 2.0, 3.0, 3.0};
    REQUIRE(throws_invalid_naming([&] { svq::lloyd_fit(few, 2); }, "3 distinct"));
    const std::vector<double> with_nan = {1.0, 2.0, std::numeric_limits<double>::quiet_NaN(), 4.0};
    REQUIRE(throws_invalid_naming([&] { svq::lloyd_fit(with_nan, 1); }, "sample 2"));
    REQUIRE(throws_invalid_naming([&] { svq::lloyd_fit(few, 0); }, "bits 0"));
    REQUIRE_THROWS_AS(svq::empirical_mse(svq::uniform_quantizer(0.0, 1.0, 1), std::vector<double>{}),
                      svq::invalid_argument);
}
