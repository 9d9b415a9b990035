// Gain densities and a density object that integrates them.
//
// A group x of `dim` iid N(0, sigma^2) weights has norm ||x|| = sigma * chi(dim). Inside a row of
// `row_len` such weights the share of the row's norm that one group carries is exactly
// ||x|| / ||row|| = sqrt(B) with B ~ Beta(dim / 2, (row_len - dim) / 2), whatever sigma is.
// docs/scale.md derives both and says which test checks what.
#pragma once

#include <svq/error.hpp>
#include <svq/scale/integrate.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <numbers>
#include <utility>
#include <vector>

namespace svq {

namespace detail {

inline void check_dim(unsigned dim, const char* who) {
    if (dim == 0) throw svq::invalid_argument(fmt::format("{}: dim {} must be at least 1", who, dim));
}

inline void check_sigma(double sigma, const char* who) {
    if (!(sigma > 0.0) || !std::isfinite(sigma)) {
        throw svq::invalid_argument(fmt::format("{}: sigma {} is not finite and positive", who, sigma));
    }
}

inline void check_row_len(unsigned dim, unsigned row_len, const char* who) {
    check_dim(dim, who);
    if (row_len <= dim) {
        throw svq::invalid_argument(fmt::format("{}: row_len {} must exceed dim {}", who, row_len, dim));
    }
}

inline void check_point(double x, const char* who) {
    if (std::isnan(x)) throw svq::invalid_argument(fmt::format("{}: x is {}", who, x));
}

// Density of sigma * chi(dim) with its normalising constant computed once:
// f(x) = x^(dim-1) exp(-x^2 / (2 sigma^2)) / (2^(dim/2 - 1) Gamma(dim/2) sigma^dim), x >= 0.
// Evaluated in the log domain (lgamma), so dim = 1024 neither overflows nor underflows near the mode.
struct chi_density_fn {
    double dim;
    double sigma;
    double log_norm;

    chi_density_fn(unsigned dim_, double sigma_)
        : dim(dim_),
          sigma(sigma_),
          log_norm(-(0.5 * dim_ - 1.0) * std::numbers::ln2 - std::lgamma(0.5 * dim_) - std::log(sigma_)) {}

    double operator()(double x) const noexcept {
        if (!(x >= 0.0) || std::isinf(x)) return 0.0;
        const double t = x / sigma;
        // dim = 1: x^0 = 1 also at x = 0, where (dim - 1) * log(0) would be 0 * -inf.
        const double power = dim == 1.0 ? 0.0 : (dim - 1.0) * std::log(t);
        return std::exp(log_norm + power - 0.5 * t * t);
    }
};

// Density of sqrt(B), B ~ Beta(a, b), a = dim/2, b = (row_len - dim)/2, on [0, 1]:
// f(s) = 2 s^(2a-1) (1 - s^2)^(b-1) / B(a, b). Infinite at s = 1 when b < 1 (row_len = dim + 1):
// integrable, and the integrator never evaluates an endpoint.
struct beta_norm_density_fn {
    double dim;
    double b_minus_1;
    double log_norm;

    beta_norm_density_fn(unsigned dim_, unsigned row_len)
        : dim(dim_),
          b_minus_1(0.5 * (row_len - dim_) - 1.0),
          log_norm(std::numbers::ln2 -
                   (std::lgamma(0.5 * dim_) + std::lgamma(0.5 * (row_len - dim_)) - std::lgamma(0.5 * row_len))) {}

    double operator()(double s) const noexcept {
        if (!(s >= 0.0) || !(s <= 1.0)) return 0.0;
        const double power = dim == 1.0 ? 0.0 : (dim - 1.0) * std::log(s);
        double tail = 0.0;  // (b - 1) * log(1 - s^2), with log(1 - s^2) = log1p(-s) + log1p(s) for accuracy near 1
        if (b_minus_1 != 0.0) {
            if (s == 1.0) return b_minus_1 < 0.0 ? std::numeric_limits<double>::infinity() : 0.0;
            tail = b_minus_1 * (std::log1p(-s) + std::log1p(s));
        }
        return std::exp(log_norm + power + tail);
    }
};

}  // namespace detail

// Density of sigma * chi(dim) at x (0 for x < 0): the norm of dim iid N(0, sigma^2) values.
inline double chi_pdf(unsigned dim, double sigma, double x) {
    detail::check_dim(dim, "chi_pdf");
    detail::check_sigma(sigma, "chi_pdf");
    detail::check_point(x, "chi_pdf");
    return detail::chi_density_fn(dim, sigma)(x);
}

// Density of sqrt(Beta(dim/2, (row_len - dim)/2)) at x (0 outside [0, 1]): the norm of a group of dim
// weights divided by the norm of its row of row_len iid Gaussian weights.
inline double beta_norm_pdf(unsigned dim, unsigned row_len, double x) {
    detail::check_row_len(dim, row_len, "beta_norm_pdf");
    detail::check_point(x, "beta_norm_pdf");
    return detail::beta_norm_density_fn(dim, row_len)(x);
}

// A density on [lo, hi] made ready for integration: the interval is cut once into panels on each
// of which a 10-point Gauss-Legendre rule is accurate to ~1e-12 relative (adaptive, see
// detail::panel_partition); each panel's mass and first moment are kept, so the moments of a cell
// cost one rule on each partial panel at its ends plus a sum over the whole panels inside.
// pdf need not be normalised: mass() is its integral over [lo, hi], and conditional quantities
// divide by it. Throws svq::invalid_argument for a bad interval, a negative or non-finite value at
// a quadrature node, or zero mass.
class density {
public:
    density(std::function<double(double)> pdf, double lo, double hi) : pdf_(std::move(pdf)), lo_(lo), hi_(hi) {
        if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo < hi)) {
            throw svq::invalid_argument(fmt::format("density: interval [{}, {}] is not finite with lo < hi", lo, hi));
        }
        if (!pdf_) throw svq::invalid_argument("density: empty pdf function");
        detail::panel_partition partition(pdf_, lo, hi);
        bounds_ = partition.bounds();
        panels_ = partition.moments();
        const std::size_t count = panels_.size();
        below_.assign(count + 1, 0.0);
        above_.assign(count + 1, 0.0);
        for (std::size_t i = 0; i < count; ++i) below_[i + 1] = below_[i] + panels_[i].mass;
        for (std::size_t i = count; i-- > 0;) above_[i] = above_[i + 1] + panels_[i].mass;
        total_ = above_[0];
        if (!(total_ > 0.0) || !std::isfinite(total_)) {
            throw svq::invalid_argument(
                fmt::format("density: mass {} on [{}, {}] is not finite and positive", total_, lo, hi));
        }
    }

    double lo() const noexcept { return lo_; }
    double hi() const noexcept { return hi_; }
    double operator()(double x) const { return pdf_(x); }
    const std::function<double(double)>& pdf() const noexcept { return pdf_; }
    // Number of integration panels (a measure of how hard the density was to resolve).
    std::size_t panel_count() const noexcept { return panels_.size(); }

    // Integral of pdf over [lo, hi].
    double mass() const noexcept { return total_; }

    // Integral of pdf over [a, b] intersected with [lo, hi] (0 when empty).
    double mass(double a, double b) const { return moments_about(a, b, 0.0).mass; }

    // Mass and first moment about ref over [a, b] intersected with [lo, hi]: {int p, int (x - ref) p}.
    // Taking the moment about a nearby point (a level) keeps the conditional mean free of cancellation.
    detail::panel_moments moments_about(double a, double b, double ref) const {
        detail::panel_moments sum;
        for_each_piece(a, b, [&](double pa, double pb, std::size_t panel, bool whole) {
            if (whole) {
                const double centre = 0.5 * (bounds_[panel] + bounds_[panel + 1]);
                sum.mass += panels_[panel].mass;
                sum.first += panels_[panel].first + (centre - ref) * panels_[panel].mass;
            } else {
                detail::for_each_gauss_node(pa, pb, [&](double x, double w) {
                    const double p = w * pdf_(x);
                    sum.mass += p;
                    sum.first += (x - ref) * p;
                });
            }
        });
        return sum;
    }

    // E[X | a < X < b]; the midpoint of [a, b] when the cell carries no mass.
    double conditional_mean(double a, double b) const {
        const double ref = 0.5 * (std::clamp(a, lo_, hi_) + std::clamp(b, lo_, hi_));
        const detail::panel_moments m = moments_about(a, b, ref);
        return m.mass > 0.0 ? ref + m.first / m.mass : ref;
    }

    double mean() const { return conditional_mean(lo_, hi_); }

    // Integral of weight(x) * pdf(x) over [a, b] intersected with [lo, hi].
    template <class Weight>
    double integrate(double a, double b, Weight&& weight) const {
        double sum = 0.0;
        for_each_piece(a, b, [&](double pa, double pb, std::size_t, bool) {
            detail::for_each_gauss_node(pa, pb, [&](double x, double w) { sum += w * weight(x) * pdf_(x); });
        });
        return sum;
    }

    // P(X <= x) under the density normalised on [lo, hi].
    double cdf(double x) const {
        detail::check_point(x, "density::cdf");
        if (x <= lo_) return 0.0;
        if (x >= hi_) return 1.0;
        const std::size_t k = panel_of(x);
        return (below_[k] + partial_mass(bounds_[k], x)) / total_;
    }

    // x with cdf(x) = prob, prob in [0, 1]. Probabilities above 1/2 are solved from the upper tail,
    // so quantile(1 - 1e-12) is as accurate as quantile(1e-12).
    double quantile(double prob) const {
        if (!(prob >= 0.0) || !(prob <= 1.0)) {
            throw svq::invalid_argument(fmt::format("density::quantile: probability {} outside [0, 1]", prob));
        }
        return prob <= 0.5 ? lower_quantile(prob) : upper_quantile(1.0 - prob);
    }

    // x with P(X > x) = tail, tail in [0, 1]: the upper quantiles that 1 - tail cannot represent in
    // double (tail = 1e-20 is a point well inside the upper tail, quantile(1 - 1e-20) is hi()).
    double upper_quantile(double tail) const {
        if (!(tail >= 0.0) || !(tail <= 1.0)) {
            throw svq::invalid_argument(
                fmt::format("density::upper_quantile: tail probability {} outside [0, 1]", tail));
        }
        if (tail > 0.5) return lower_quantile(1.0 - tail);
        if (tail == 0.0) return hi_;
        const double target = tail * total_;
        // Panel k with above_[k + 1] <= target < above_[k] (above_ is decreasing).
        std::size_t k = panels_.size() - 1;
        while (k > 0 && above_[k] <= target) --k;
        return solve_in_panel(k, target - above_[k + 1], true);
    }

private:
    // x with cdf(x) = prob for prob in [0, 1/2], solved from the lower edge.
    double lower_quantile(double prob) const {
        if (prob == 0.0) return lo_;
        const double target = prob * total_;
        // Panel k with below_[k] <= target < below_[k + 1].
        std::size_t k =
            static_cast<std::size_t>(std::upper_bound(below_.begin(), below_.end(), target) - below_.begin());
        k = std::min(k == 0 ? 0 : k - 1, panels_.size() - 1);
        return solve_in_panel(k, target - below_[k], false);
    }

    // Index k of the panel [bounds_[k], bounds_[k + 1]) holding x, for lo <= x < hi.
    std::size_t panel_of(double x) const noexcept {
        const auto it = std::upper_bound(bounds_.begin(), bounds_.end(), x);
        const std::size_t k = it == bounds_.begin() ? 0 : static_cast<std::size_t>(it - bounds_.begin()) - 1;
        return std::min(k, panels_.size() - 1);
    }

    // Integral of pdf over [a, b] inside one panel (one rule application).
    double partial_mass(double a, double b) const {
        if (!(a < b)) return 0.0;
        return detail::gauss_legendre(pdf_, a, b);
    }

    // Calls piece(pa, pb, panel, whole) for each panel overlapping [a, b] cut to [lo, hi], in order;
    // whole is true when [pa, pb] is the entire panel.
    template <class Piece>
    void for_each_piece(double a, double b, Piece&& piece) const {
        a = std::max(a, lo_);
        b = std::min(b, hi_);
        if (!(a < b)) return;
        for (std::size_t k = panel_of(a); k < panels_.size() && bounds_[k] < b; ++k) {
            const double pa = std::max(a, bounds_[k]);
            const double pb = std::min(b, bounds_[k + 1]);
            piece(pa, pb, k, pa == bounds_[k] && pb == bounds_[k + 1]);
        }
    }

    // Point x in panel k where the mass from the panel's lower edge to x (from_top: from x to the
    // upper edge) equals `mass`. Safeguarded Newton (the derivative is the pdf) with bisection.
    double solve_in_panel(std::size_t k, double mass, bool from_top) const {
        const double edge_lo = bounds_[k];
        const double edge_hi = bounds_[k + 1];
        const double panel_mass = panels_[k].mass;
        if (!(panel_mass > 0.0)) return from_top ? edge_hi : edge_lo;
        mass = std::clamp(mass, 0.0, panel_mass);
        // excess(x) increases with x at rate pdf(x) and is zero at the answer; from the top it is
        // computed from the upper edge so that a tiny upper-tail target keeps its relative accuracy.
        auto excess = [&](double x) {
            return from_top ? mass - partial_mass(x, edge_hi) : partial_mass(edge_lo, x) - mass;
        };
        double left = edge_lo;
        double right = edge_hi;
        const double frac = from_top ? 1.0 - mass / panel_mass : mass / panel_mass;
        double x = edge_lo + frac * (edge_hi - edge_lo);
        // Below this the rule's own rounding decides the sign of excess(): x is as good as it gets.
        // Relative to the target, not the panel: partial_mass over [edge, x] is accurate relative to
        // its own size, so a tail target of 1e-20 in a panel of mass 1e-3 is still solved to ~1e-15.
        const double noise = 8.0 * std::numeric_limits<double>::epsilon() * mass;
        for (int iter = 0; iter < 100; ++iter) {
            const double f = excess(x);
            if (std::abs(f) <= noise) break;
            if (f > 0.0)
                right = x;
            else
                left = x;
            const double p = pdf_(x);
            double next = p > 0.0 ? x - f / p : 0.5 * (left + right);
            if (!(next > left && next < right)) next = 0.5 * (left + right);
            const double step = std::abs(next - x);
            x = next;
            if (step <= 4.0 * std::numeric_limits<double>::epsilon() * std::abs(x) || !(left < right)) {
                break;
            }
        }
        return x;
    }

    std::function<double(double)> pdf_;
    double lo_;
    double hi_;
    std::vector<double> bounds_;                 // panel edges, size panel_count() + 1
    std::vector<detail::panel_moments> panels_;  // per panel: mass, first moment about its centre
    std::vector<double> below_;                  // below_[k]: mass of panels 0..k-1
    std::vector<double> above_;                  // above_[k]: mass of panels k..end (no cancellation in the upper tail)
    double total_ = 0.0;
};

namespace detail {

// Tail probability cut from each side of a gain density's range: the integration range is
// [quantile(tail), upper_quantile(tail)]. The cut moves the outer cells' centroids, and the
// Lloyd-Max map amplifies that towards the outer levels (cut at 1e-12, the 128-level half-normal
// optimum was off by 2e-7 relative); at 1e-20 the levels agree with the untrimmed law to ~1e-12
// (test_scale.cpp, "Lloyd-Max on known densities").
inline constexpr double density_tail = 1e-20;

// The density on [quantile(tail), upper_quantile(tail)], found on a generous bracket
// [bracket_lo, bracket_hi] that holds all but a negligible (< 1e-24) part of the mass.
inline density trimmed_density(std::function<double(double)> pdf, double bracket_lo, double bracket_hi) {
    const density broad(pdf, bracket_lo, bracket_hi);
    const double lo = broad.quantile(density_tail);
    const double hi = broad.upper_quantile(density_tail);
    return density(std::move(pdf), lo, hi);
}

}  // namespace detail

// sigma * chi(dim) on the range that holds all but 2e-20 of its mass.
inline density chi_density(unsigned dim, double sigma = 1.0) {
    detail::check_dim(dim, "chi_density");
    detail::check_sigma(sigma, "chi_density");
    // chi(dim) is a 1-Lipschitz function of a Gaussian vector with median within 1 of sqrt(dim):
    // P(|chi - sqrt(dim)| > 12) < 2 exp(-11^2 / 2) ~ 1e-26.
    const double root = std::sqrt(static_cast<double>(dim));
    return detail::trimmed_density(detail::chi_density_fn(dim, sigma), sigma * std::max(0.0, root - 12.0),
                                   sigma * (root + 12.0));
}

// sqrt(Beta(dim/2, (row_len - dim)/2)) on the range that holds all but 2e-20 of its mass.
inline density beta_norm_density(unsigned dim, unsigned row_len) {
    detail::check_row_len(dim, row_len, "beta_norm_density");
    const double a = 0.5 * dim;
    const double b = 0.5 * (row_len - dim);
    const double mean = a / (a + b);
    const double sd = std::sqrt(a * b / ((a + b) * (a + b) * (a + b + 1.0)));
    // 80 standard deviations of B hold all but < 1e-24 of the mass even for a or b = 1/2 (chi-square(1)-like tails).
    const double lo = std::sqrt(std::max(0.0, mean - 80.0 * sd));
    const double hi = std::sqrt(std::min(1.0, mean + 80.0 * sd));
    return detail::trimmed_density(detail::beta_norm_density_fn(dim, row_len), lo, hi);
}

}  // namespace svq
