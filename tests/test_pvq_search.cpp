#include "catch.hpp"

#include <svq/pvq/search.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

// Gaussian from a Box-Muller transform of mt19937_64 output: the same numbers with every standard library.
struct gaussian_source {
    std::mt19937_64 rng;
    explicit gaussian_source(std::uint64_t seed) : rng(seed) {}
    double uniform() { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; }  // in (0, 1)
    double operator()() {
        const double radius = std::sqrt(-2.0 * std::log(uniform()));
        return radius * std::cos(6.283185307179586 * uniform());
    }
    int integer(int lo, int hi) { return lo + static_cast<int>(rng() % static_cast<std::uint64_t>(hi - lo + 1)); }
};

std::vector<float> gaussian_vector(gaussian_source& g, std::size_t dim) {
    std::vector<float> x(dim);
    for (auto& v : x) v = static_cast<float>(g());
    return x;
}

// (sum w_i x_i y_i)^2 / (sum w_i y_i^2), in long double; w empty = all ones.
long double objective(const std::vector<float>& x, const std::vector<int>& y, const std::vector<float>& w = {}) {
    long double xy = 0.0L, yy = 0.0L;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const long double wi = w.empty() ? 1.0L : static_cast<long double>(w[i]);
        xy += wi * x[i] * y[i];
        yy += wi * static_cast<long double>(y[i]) * y[i];
    }
    return xy * xy / yy;
}

// All y >= 0 with sum y = pulses, flattened (dim ints per point). The optimum over the whole
// pyramid has sign(y_i) = sign(x_i), so the search over |x| needs only this orthant.
void enumerate_orthant(int dim, int pulses, std::vector<int>& prefix, std::vector<int>& out) {
    if (static_cast<int>(prefix.size()) == dim - 1) {
        prefix.push_back(pulses);
        out.insert(out.end(), prefix.begin(), prefix.end());
        prefix.pop_back();
        return;
    }
    for (int k = 0; k <= pulses; ++k) {
        prefix.push_back(k);
        enumerate_orthant(dim, pulses - k, prefix, out);
        prefix.pop_back();
    }
}

struct orthant_points {
    int dim;
    std::vector<double> coords;  // count * dim
    std::vector<double> norms2;  // count, y.y (weighted problems recompute it)
    std::size_t count() const { return norms2.size(); }
};

orthant_points make_points(int dim, int pulses) {
    std::vector<int> prefix, flat;
    enumerate_orthant(dim, pulses, prefix, flat);
    orthant_points p{dim, std::vector<double>(flat.begin(), flat.end()), {}};
    for (std::size_t j = 0; j < flat.size(); j += static_cast<std::size_t>(dim)) {
        double n2 = 0;
        for (int i = 0; i < dim; ++i) n2 += static_cast<double>(flat[j + i]) * flat[j + i];
        p.norms2.push_back(n2);
    }
    return p;
}

// max over the orthant of (sum w|x| y)^2 / (sum w y^2); w empty = all ones.
long double brute_force_best(const orthant_points& pts, const std::vector<float>& x, const std::vector<float>& w = {}) {
    const int dim = pts.dim;
    std::vector<double> wa(static_cast<std::size_t>(dim));
    for (int i = 0; i < dim; ++i) wa[i] = std::fabs(static_cast<double>(x[i])) * (w.empty() ? 1.0 : w[i]);
    double best = -1.0;
    for (std::size_t j = 0; j < pts.count(); ++j) {
        const double* y = &pts.coords[j * static_cast<std::size_t>(dim)];
        double xy = 0.0, yy = 0.0;
        for (int i = 0; i < dim; ++i) xy += wa[i] * y[i];
        if (w.empty()) yy = pts.norms2[j];
        else
            for (int i = 0; i < dim; ++i) yy += w[i] * y[i] * y[i];
        best = std::max(best, xy * xy / yy);
    }
    return best;
}

void require_on_pyramid(const std::vector<float>& x, const std::vector<int>& y, int pulses) {
    long long total = 0;
    bool signs_ok = true;
    for (std::size_t i = 0; i < x.size(); ++i) {
        total += std::abs(y[i]);
        if (y[i] != 0 && ((y[i] < 0) != (x[i] < 0.0f))) signs_ok = false;
        if (x[i] == 0.0f && y[i] < 0) signs_ok = false;
    }
    REQUIRE(total == pulses);
    REQUIRE(signs_ok);
}

std::string error_message(void (*f)()) {
    try {
        f();
    } catch (const svq::invalid_argument& e) {
        return e.what();
    }
    return "<no exception>";
}

// Runs the SIMD body of Arch when the build supports it; returns false when it does not.
template <class Arch>
bool simd_search(const std::vector<float>& x, const std::vector<float>& w, int pulses, std::vector<int>& y,
                 const svq::search_options& opt, const svq::detail::search_tuning& tuning = {}) {
    if constexpr (Arch::supported()) {
        std::vector<double> scratch(svq::detail::pvq_search_scratch_size(x.size()));
        if (w.empty())
            svq::detail::pvq_search_kernel(Arch{}, x.data(), x.size(), pulses, y.data(), opt, scratch.data(), tuning);
        else
            svq::detail::pvq_search_weighted_kernel(Arch{}, x.data(), w.data(), x.size(), pulses, y.data(), opt,
                                                    scratch.data(), tuning);
        return true;
    } else {
        (void)x, (void)w, (void)pulses, (void)y, (void)opt, (void)tuning;
        return false;
    }
}

void scalar_search(const std::vector<float>& x, const std::vector<float>& w, int pulses, std::vector<int>& y,
                   const svq::search_options& opt, const svq::detail::search_tuning& tuning = {}) {
    std::vector<double> scratch(svq::detail::pvq_search_scratch_size(x.size()));
    if (w.empty())
        svq::detail::pvq_search_kernel_scalar(x.data(), x.size(), pulses, y.data(), opt, scratch.data(), tuning);
    else
        svq::detail::pvq_search_weighted_kernel_scalar(x.data(), w.data(), x.size(), pulses, y.data(), opt,
                                                       scratch.data(), tuning);
}

// Input families for the invariant tests: plain Gaussian, heavy tails, many zeros, many exact ties.
std::vector<float> mixed_vector(gaussian_source& g, std::size_t dim, int family) {
    std::vector<float> x(dim);
    for (auto& v : x) {
        const double z = g();
        switch (family) {
            case 0: v = static_cast<float>(z); break;
            case 1: {  // Student-t-like: Gaussian over the root of a small chi-square
                const double a = g(), b = g(), c = g(), d = g();
                v = static_cast<float>(z / std::sqrt((a * a + b * b + c * c + d * d) / 4.0 + 1e-12));
                break;
            }
            case 2: v = g.integer(0, 2) == 0 ? static_cast<float>(z) : (g.integer(0, 1) ? 0.0f : -0.0f); break;
            default: v = static_cast<float>(g.integer(-3, 3)); break;  // ties everywhere
        }
    }
    return x;
}

std::vector<float> random_weights(gaussian_source& g, std::size_t dim) {
    std::vector<float> w(dim);
    for (auto& v : w) v = static_cast<float>(std::exp(0.8 * g()));  // log-normal, spread ~ x5 either way
    return w;
}

}  // namespace

TEST_CASE("pvq_search: refined search equals the brute-force optimum on small pyramids") {
    gaussian_source g(0x5ea7c4'0001ULL);
    const int trials = 2000;
    int worst_percent_times_100 = 10000;
    for (int pulses : {4, 8, 12}) {
        for (int dim = 3; dim <= 8; ++dim) {
            const orthant_points pts = make_points(dim, pulses);
            int refined_optimal = 0, greedy_optimal = 0, swept_optimal = 0, refined_worse_than_greedy = 0;
            int swept_worse_than_refined = 0;
            std::vector<int> y_refined(static_cast<std::size_t>(dim)), y_greedy(static_cast<std::size_t>(dim));
            std::vector<int> y_swept(static_cast<std::size_t>(dim));
            svq::search_options with_sweep;
            with_sweep.sweep_steps = 4;
            for (int t = 0; t < trials; ++t) {
                const auto x = gaussian_vector(g, static_cast<std::size_t>(dim));
                svq::pvq_search(x, pulses, y_refined);
                svq::pvq_search(x, pulses, y_greedy, svq::search_options{false, 0});
                svq::pvq_search(x, pulses, y_swept, with_sweep);
                const long double best = brute_force_best(pts, x);
                const long double refined = objective(x, y_refined);
                const long double greedy = objective(x, y_greedy);
                const long double swept = objective(x, y_swept);
                if (refined >= best * (1.0L - 1e-9L)) ++refined_optimal;
                if (greedy >= best * (1.0L - 1e-9L)) ++greedy_optimal;
                if (swept >= best * (1.0L - 1e-9L)) ++swept_optimal;
                if (refined < greedy * (1.0L - 1e-12L)) ++refined_worse_than_greedy;
                if (swept < refined * (1.0L - 1e-12L)) ++swept_worse_than_refined;
                REQUIRE(refined <= best * (1.0L + 1e-9L));  // the oracle really is the maximum
            }
            const double refined_rate = 100.0 * refined_optimal / trials;
            const double greedy_rate = 100.0 * greedy_optimal / trials;
            const double swept_rate = 100.0 * swept_optimal / trials;
            std::printf("brute force N=%d K=%2d: refined optimal %6.2f%%, greedy optimal %6.2f%%, refined+sweep "
                        "optimal %6.2f%% (%zu points)\n",
                        dim, pulses, refined_rate, greedy_rate, swept_rate, pts.count());
            CAPTURE(dim, pulses, refined_rate, greedy_rate, swept_rate);
            CHECK(refined_worse_than_greedy == 0);
            CHECK(swept_worse_than_refined == 0);
            CHECK(swept_optimal >= refined_optimal);
            CHECK(refined_optimal >= trials * 99 / 100);
            worst_percent_times_100 = std::min(worst_percent_times_100, refined_optimal * 10000 / trials);
        }
    }
    std::printf("brute force: worst refined match rate %.2f%%\n", worst_percent_times_100 / 100.0);
}

TEST_CASE("pvq_search: refinement ends at a single-pulse-move local optimum") {
    gaussian_source g(0x5ea7c4'0002ULL);
    const svq::search_options until_converged{true, 1000};
    for (int trial = 0; trial < 300; ++trial) {
        const auto dim = static_cast<std::size_t>(g.integer(2, 40));
        const int pulses = g.integer(1, 60);
        const auto x = mixed_vector(g, dim, trial % 3);
        std::vector<int> y(dim);
        svq::pvq_search(x, pulses, y, until_converged);
        const long double current = objective(x, y);
        long double best_move = 0.0L;
        for (std::size_t a = 0; a < dim; ++a) {
            if (y[a] == 0) continue;
            for (std::size_t b = 0; b < dim; ++b) {
                if (b == a) continue;
                auto moved = y;
                moved[a] += moved[a] > 0 ? -1 : 1;
                moved[b] += x[b] < 0.0f ? -1 : 1;
                best_move = std::max(best_move, objective(x, moved));
            }
        }
        CAPTURE(trial, dim, pulses);
        REQUIRE(best_move <= current * (1.0L + 1e-12L));
    }
}

TEST_CASE("pvq_search: invariants, and SIMD bodies equal the scalar body bit for bit") {
    gaussian_source g(0x5ea7c4'0003ULL);
    int simd_comparisons = 0;
    std::vector<std::pair<int, int>> shapes = {{1, 1}, {1, 1000}, {2, 1}, {300, 1}, {300, 1000}, {7, 3}, {8, 16},
                                               {16, 27}, {32, 50}, {64, 96}, {128, 187}, {17, 999}, {299, 2}};
    for (int trial = 0; trial < 300; ++trial) shapes.emplace_back(g.integer(1, 300), g.integer(1, 1000));
    int trial = 0;
    for (const auto& [dim_int, pulses] : shapes) {
        const auto dim = static_cast<std::size_t>(dim_int);
        const int family = trial % 4;
        const auto x = mixed_vector(g, dim, family);
        const auto w = random_weights(g, dim);
        CAPTURE(trial, dim, pulses, family);
        ++trial;
        for (const bool refine : {false, true}) {
            const svq::search_options opt{refine, 8};
            for (const bool weighted : {false, true}) {
                const std::vector<float> no_weights;
                const auto& weights = weighted ? w : no_weights;
                std::vector<int> y_public(dim), y_scalar(dim), y_simd(dim);
                if (weighted) svq::pvq_search_weighted(x, w, pulses, y_public, opt);
                else svq::pvq_search(x, pulses, y_public, opt);
                require_on_pyramid(x, y_public, pulses);
                scalar_search(x, weights, pulses, y_scalar, opt);
                REQUIRE(y_scalar == y_public);
                if (simd_search<svq::simd::default_arch>(x, weights, pulses, y_simd, opt)) {
                    REQUIRE(y_simd == y_scalar);
                    ++simd_comparisons;
                }
                if (simd_search<xsimd::sse2>(x, weights, pulses, y_simd, opt)) REQUIRE(y_simd == y_scalar);
                if (simd_search<xsimd::avx2>(x, weights, pulses, y_simd, opt)) REQUIRE(y_simd == y_scalar);
                if (simd_search<xsimd::avx512f>(x, weights, pulses, y_simd, opt)) REQUIRE(y_simd == y_scalar);
            }
        }
    }
    std::printf("SIMD (%s) vs scalar: %d bit-identical comparisons\n", std::string(svq::simd::arch_name()).c_str(),
                simd_comparisons);
    if (!svq::simd::has_simd) WARN("no SIMD architecture in this build: only the scalar body was checked");
}

TEST_CASE("pvq_search: the move screen and the projection overshoot path") {
    gaussian_source g(0x5ea7c4'0004ULL);
    SECTION("the screen only skips work: y is identical with it switched off") {
        svq::detail::search_tuning unscreened;
        unscreened.screen_moves = false;
        for (int trial = 0; trial < 400; ++trial) {
            const auto dim = static_cast<std::size_t>(g.integer(2, 160));
            const int pulses = g.integer(1, 300);
            const auto x = mixed_vector(g, dim, trial % 4);
            const auto w = trial % 2 ? random_weights(g, dim) : std::vector<float>{};
            std::vector<int> screened_y(dim), unscreened_y(dim);
            scalar_search(x, w, pulses, screened_y, svq::search_options{});
            scalar_search(x, w, pulses, unscreened_y, svq::search_options{}, unscreened);
            CAPTURE(trial, dim, pulses);
            REQUIRE(screened_y == unscreened_y);
        }
    }
    SECTION("a projection above K is repaired by greedy removal, and the result is still optimal") {
        svq::detail::search_tuning overshoot;
        overshoot.projection_slack = -3.0;  // K' = K + 3: the floors exceed K on most inputs
        const orthant_points pts = make_points(6, 8);
        int optimal = 0;
        const int trials = 500;
        for (int t = 0; t < trials; ++t) {
            const auto x = gaussian_vector(g, 6);
            std::vector<int> y(6), y_simd(6);
            scalar_search(x, {}, 8, y, svq::search_options{}, overshoot);
            require_on_pyramid(x, y, 8);
            if (simd_search<svq::simd::default_arch>(x, {}, 8, y_simd, svq::search_options{}, overshoot))
                REQUIRE(y_simd == y);
            if (objective(x, y) >= brute_force_best(pts, x) * (1.0L - 1e-9L)) ++optimal;
        }
        std::printf("overshoot path N=6 K=8: refined optimal %.2f%%\n", 100.0 * optimal / trials);
        REQUIRE(optimal >= trials * 99 / 100);
    }
}

TEST_CASE("pvq_search: exact symmetries") {
    gaussian_source g(0x5ea7c4'0005ULL);
    for (int trial = 0; trial < 200; ++trial) {
        const auto dim = static_cast<std::size_t>(g.integer(1, 100));
        const int pulses = g.integer(1, 200);
        const auto x = mixed_vector(g, dim, trial % 4);
        const auto w = random_weights(g, dim);
        std::vector<int> y(dim), y_other(dim);
        CAPTURE(trial, dim, pulses);
        // Scaling x (or w) by a power of two scales every intermediate exactly: same point.
        svq::pvq_search(x, pulses, y);
        for (const float factor : {0x1.0p-20f, 0x1.0p+7f}) {
            std::vector<float> scaled(x);
            for (auto& v : scaled) v *= factor;
            svq::pvq_search(scaled, pulses, y_other);
            REQUIRE(y_other == y);
        }
        // Negating x negates y.
        std::vector<float> negated(x);
        for (auto& v : negated) v = -v;
        svq::pvq_search(negated, pulses, y_other);
        for (std::size_t i = 0; i < dim; ++i) REQUIRE(y_other[i] == (x[i] == 0.0f ? y[i] : -y[i]));
        // Weighted: scaling w by a power of two.
        svq::pvq_search_weighted(x, w, pulses, y);
        std::vector<float> scaled_w(w);
        for (auto& v : scaled_w) v *= 0x1.0p-9f;
        svq::pvq_search_weighted(x, scaled_w, pulses, y_other);
        REQUIRE(y_other == y);
    }
}

TEST_CASE("pvq_search: ties go to the smallest index") {
    const auto search = [](std::vector<float> x, int pulses) {
        std::vector<int> y(x.size());
        svq::pvq_search(x, pulses, y);
        return y;
    };
    REQUIRE(search({1, 1, 1, 1}, 1) == std::vector<int>{1, 0, 0, 0});
    REQUIRE(search({1, 1, 1, 1}, 2) == std::vector<int>{1, 1, 0, 0});
    REQUIRE(search({1, 1, 1, 1}, 5) == std::vector<int>{2, 1, 1, 1});
    REQUIRE(search({-2, 2, -2}, 2) == std::vector<int>{-1, 1, 0});
    REQUIRE(search({0.5f, 3, 3, 0.5f}, 1) == std::vector<int>{0, 1, 0, 0});
    // Long enough for the SIMD main loop and a tail: the first pulses still go to the first indices.
    std::vector<float> flat(37, 0.25f);
    std::vector<int> expected(37, 0);
    for (int i = 0; i < 5; ++i) expected[static_cast<std::size_t>(i)] = 1;
    REQUIRE(search(flat, 5) == expected);
    flat[30] = 0.5f;  // one larger entry, in the SIMD tail for 8 lanes
    expected.assign(37, 0);
    expected[30] = 1;
    REQUIRE(search(flat, 1) == expected);
    std::vector<int> y(37);
    std::vector<float> w(37, 3.0f);
    svq::pvq_search_weighted(flat, w, 1, y);
    REQUIRE(y == expected);
}

TEST_CASE("pvq_search_weighted: equal weights give the unweighted point; brute-force optimal otherwise") {
    gaussian_source g(0x5ea7c4'0006ULL);
    SECTION("equal weights") {
        for (int trial = 0; trial < 300; ++trial) {
            const auto dim = static_cast<std::size_t>(g.integer(1, 200));
            const int pulses = g.integer(1, 400);
            const auto x = mixed_vector(g, dim, trial % 4);
            const float weight = trial % 3 == 0 ? 1.0f : static_cast<float>(0.01 + 10.0 * g.uniform());
            const std::vector<float> w(dim, weight);
            std::vector<int> y(dim), y_weighted(dim);
            for (const bool refine : {false, true}) {
                svq::pvq_search(x, pulses, y, svq::search_options{refine, 8});
                svq::pvq_search_weighted(x, w, pulses, y_weighted, svq::search_options{refine, 8});
                CAPTURE(trial, dim, pulses, weight, refine);
                REQUIRE(y_weighted == y);
            }
        }
    }
    SECTION("brute force of the weighted objective") {
        // The default weighted search sweeps the parametric path (search_options::weighted_sweep_steps);
        // without the sweep, single moves alone reached only 97.8-98.4% at K = 8 (N = 4..6).
        for (int pulses : {4, 8, 12}) {
            for (int dim = 3; dim <= 8; ++dim) {
                const orthant_points pts = make_points(dim, pulses);
                const int trials = 1000;
                int optimal = 0, worse_than_greedy = 0;
                std::vector<int> y(static_cast<std::size_t>(dim)), y_greedy(static_cast<std::size_t>(dim));
                for (int t = 0; t < trials; ++t) {
                    const auto x = gaussian_vector(g, static_cast<std::size_t>(dim));
                    const auto w = random_weights(g, static_cast<std::size_t>(dim));
                    svq::pvq_search_weighted(x, w, pulses, y, svq::search_options{});
                    svq::pvq_search_weighted(x, w, pulses, y_greedy, svq::search_options{false, 0});
                    require_on_pyramid(x, y, pulses);
                    const long double found = objective(x, y, w);
                    const long double best = brute_force_best(pts, x, w);
                    REQUIRE(found <= best * (1.0L + 1e-9L));
                    if (found >= best * (1.0L - 1e-9L)) ++optimal;
                    if (found < objective(x, y_greedy, w) * (1.0L - 1e-12L)) ++worse_than_greedy;
                }
                std::printf("weighted brute force N=%d K=%d: refined optimal %6.2f%%\n", dim, pulses,
                            100.0 * optimal / trials);
                CAPTURE(dim, pulses, optimal);
                CHECK(worse_than_greedy == 0);
                CHECK(optimal >= trials * 99 / 100);
            }
        }
    }
}

TEST_CASE("pvq_search: invalid arguments are rejected with the offending value") {
    std::vector<int> y(4);
    const std::vector<float> good{1.0f, -2.0f, 0.5f, 0.0f};
    const std::vector<float> good_w{1.0f, 2.0f, 0.5f, 3.0f};
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    for (const float bad : {nan, inf, -inf}) {
        std::vector<float> x = good;
        x[2] = bad;
        try {
            svq::pvq_search(x, 5, y);
            FAIL("non-finite x accepted");
        } catch (const svq::invalid_argument& e) {
            const std::string message = e.what();
            CAPTURE(message);
            REQUIRE(message.find("x[2]") != std::string::npos);
            REQUIRE(message.find(bad != bad ? "nan" : (bad > 0 ? "inf" : "-inf")) != std::string::npos);
        }
        REQUIRE_THROWS_AS(svq::pvq_search_weighted(x, good_w, 5, y), svq::invalid_argument);
    }
    REQUIRE(error_message([] {
                std::vector<int> y3(3);
                svq::pvq_search(std::vector<float>{1, 2, 3, 4}, 5, y3);
            }) == "pvq_search: x has 4 elements but y has 3");
    REQUIRE(error_message([] {
                std::vector<int> y4(4);
                svq::pvq_search(std::vector<float>{1, 2, 3, 4}, 0, y4);
            }) == "pvq_search: pulses = 0 must be >= 1");
    REQUIRE(error_message([] {
                std::vector<int> y0;
                svq::pvq_search(std::vector<float>{}, 3, y0);
            }) == "pvq_search: x is empty (dim must be >= 1)");
    REQUIRE(error_message([] {
                std::vector<int> y4(4);
                svq::pvq_search_weighted(std::vector<float>{1, 2, 3, 4}, std::vector<float>{1, 1, 0, 1}, 2, y4);
            }) == "pvq_search_weighted: w[2] = 0 must be finite and > 0");
    REQUIRE(error_message([] {
                std::vector<int> y4(4);
                svq::pvq_search_weighted(std::vector<float>{1, 2, 3, 4}, std::vector<float>{1, -0.5f, 1, 1}, 2, y4);
            }) == "pvq_search_weighted: w[1] = -0.5 must be finite and > 0");
    REQUIRE(error_message([] {
                std::vector<int> y4(4);
                svq::pvq_search_weighted(std::vector<float>{1, 2, 3, 4}, std::vector<float>{1, 1, 1}, 2, y4);
            }) == "pvq_search_weighted: x has 4 elements but w has 3");
    REQUIRE(error_message([] {
                std::vector<int> y4(4);
                std::vector<double> scratch(7);
                svq::pvq_search(std::vector<float>{1, 2, 3, 4}, 2, y4, svq::search_options{}, scratch);
            }) == "pvq_search: scratch has 7 doubles but dim = 4 needs 8");
    std::vector<float> w_nan = good_w;
    w_nan[3] = nan;
    REQUIRE_THROWS_AS(svq::pvq_search_weighted(good, w_nan, 5, y), svq::invalid_argument);
    w_nan[3] = inf;
    REQUIRE_THROWS_AS(svq::pvq_search_weighted(good, w_nan, 5, y), svq::invalid_argument);
    REQUIRE_THROWS_AS(svq::pvq_search(good, -1, y), svq::invalid_argument);
}

TEST_CASE("pvq_search: a zero vector gives (K, 0, ..., 0)") {
    for (const float zero : {0.0f, -0.0f}) {
        const std::vector<float> x(9, zero);
        std::vector<int> y(9, 77);
        svq::pvq_search(x, 13, y);
        REQUIRE(y == std::vector<int>{13, 0, 0, 0, 0, 0, 0, 0, 0});
        svq::pvq_search_weighted(x, std::vector<float>(9, 2.5f), 4, y);
        REQUIRE(y == std::vector<int>{4, 0, 0, 0, 0, 0, 0, 0, 0});
    }
    std::vector<int> y1(1);
    svq::pvq_search(std::vector<float>{-0.0f}, 3, y1);
    REQUIRE(y1 == std::vector<int>{3});
    svq::pvq_search(std::vector<float>{-1e-30f}, 3, y1);  // one coordinate: all pulses, sign of x
    REQUIRE(y1 == std::vector<int>{-3});
}

TEST_CASE("pvq_search: caller-scratch overloads give the same point") {
    gaussian_source g(0x5ea7c4'0007ULL);
    const auto x = gaussian_vector(g, 300);  // above the allocating overload's stack buffer
    const auto w = random_weights(g, 300);
    std::vector<int> y(300), y_scratch(300);
    std::vector<double> scratch(svq::detail::pvq_search_scratch_size(300));
    svq::pvq_search(x, 411, y);
    svq::pvq_search(x, 411, y_scratch, svq::search_options{}, scratch);
    REQUIRE(y_scratch == y);
    svq::pvq_search_weighted(x, w, 411, y);
    svq::pvq_search_weighted(x, w, 411, y_scratch, svq::search_options{}, scratch);
    REQUIRE(y_scratch == y);
    require_on_pyramid(x, y, 411);
}

TEST_CASE("pvq_search: shape SQNR at N=32, K=50, greedy vs refined") {
    gaussian_source g(0x5ea7c4'0008ULL);
    const std::size_t dim = 32;
    const int pulses = 50;
    const int vectors = 20000;
    long double signal = 0, error_greedy = 0, error_refined = 0;
    int improved = 0;
    std::vector<int> y_greedy(dim), y_refined(dim);
    for (int v = 0; v < vectors; ++v) {
        const auto x = gaussian_vector(g, dim);
        svq::pvq_search(x, pulses, y_greedy, svq::search_options{false, 0});
        svq::pvq_search(x, pulses, y_refined);
        long double x2 = 0;
        for (const float xi : x) x2 += static_cast<long double>(xi) * xi;
        // With the optimal gain g = x.u, |x - g u|^2 = |x|^2 - (x.u)^2 = |x|^2 - objective.
        signal += x2;
        error_greedy += x2 - objective(x, y_greedy);
        error_refined += x2 - objective(x, y_refined);
        if (y_refined != y_greedy) ++improved;
    }
    const double sqnr_greedy = static_cast<double>(10.0L * std::log10(signal / error_greedy));
    const double sqnr_refined = static_cast<double>(10.0L * std::log10(signal / error_refined));
    std::printf("shape SQNR N=32 K=50 (%d Gaussian vectors): greedy %.3f dB, refined %.3f dB, gain %.3f dB, "
                "%.1f%% of vectors moved\n",
                vectors, sqnr_greedy, sqnr_refined, sqnr_refined - sqnr_greedy, 100.0 * improved / vectors);
    CAPTURE(sqnr_greedy, sqnr_refined);
    REQUIRE(sqnr_greedy > 15.5);
    REQUIRE(sqnr_greedy < 18.0);
    REQUIRE(sqnr_refined - sqnr_greedy > 0.01);
    REQUIRE(sqnr_refined - sqnr_greedy < 0.3);
}
