// Numerical integration for the scale quantizer: a fixed 10-point Gauss-Legendre rule and an
// adaptive panel partition of an interval built from it. No dependency of svq has an integrator
// (Eigen does not), and the densities here are smooth and cheap, so a small one is enough.
#pragma once

#include <svq/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <vector>

namespace svq::detail {

// 10-point Gauss-Legendre rule on [-1, 1]: nodes +-node[k] with weight weight[k]. Exact for
// polynomials of degree <= 19; on a panel where the integrand is smooth its error falls like h^20.
// Values computed with 40-digit arithmetic (Newton on P_10), rounded to double.
struct gauss_legendre_10 {
    static constexpr std::array<double, 5> nodes = {
        0.148874338981631210884826, 0.4333953941292471907992659, 0.6794095682990244062343274,
        0.8650633666889845107320967, 0.973906528517171720077964};
    static constexpr std::array<double, 5> weights = {
        0.295524224714752870173893, 0.2692667193099963550912269, 0.2190863625159820439955349,
        0.1494513491505805931457763, 0.06667134430868813759356881};
};

// Calls visit(x, w) for the 10 nodes of the rule mapped onto [a, b]; sum of w * f(x) is the
// rule's estimate of the integral of f over [a, b]. Nodes are interior: a singular endpoint is
// never evaluated.
template <class Visit>
inline void for_each_gauss_node(double a, double b, Visit&& visit) {
    const double half = 0.5 * (b - a);
    const double mid = 0.5 * (a + b);
    for (std::size_t k = 0; k < gauss_legendre_10::nodes.size(); ++k) {
        const double offset = half * gauss_legendre_10::nodes[k];
        const double w = half * gauss_legendre_10::weights[k];
        visit(mid - offset, w);
        visit(mid + offset, w);
    }
}

// Integral of f over [a, b] by one application of the rule.
template <class F>
inline double gauss_legendre(F&& f, double a, double b) {
    double sum = 0.0;
    for_each_gauss_node(a, b, [&](double x, double w) { sum += w * f(x); });
    return sum;
}

// Zeroth and first moment of a density over one panel [a, b]: mass = int p, first = int (x - centre) p,
// centre = (a + b) / 2. Centring the first moment keeps it free of cancellation when the panel is
// far from zero (a chi(1024) gain lives near 32 with a spread of 0.7).
struct panel_moments {
    double mass = 0.0;
    double first = 0.0;
};

// Adaptive partition of [lo, hi] into panels on each of which the 10-point rule integrates pdf and
// x * pdf to a relative accuracy of about rel_tol. Each candidate panel is checked by comparing the
// rule on it with the rule on its two halves (the halves are what is kept, so the accepted error is
// far below the check). Refinement is globally adaptive: the candidate with the largest absolute
// error is split first, up to max_splits, so a density that cannot be resolved (an integrable
// singularity at an end, where 1 - x loses its digits before the rule converges) costs a bounded
// amount of work and the budget goes where the error is. Pdf must be finite and non-negative at
// every node; otherwise svq::invalid_argument names the point.
class panel_partition {
public:
    static constexpr double rel_tol = 1e-12;
    static constexpr unsigned initial_panels = 32;
    static constexpr std::size_t max_splits = 2048;

    template <class Pdf>
    panel_partition(const Pdf& pdf, double lo, double hi) {
        // Edges of the initial panels; the last is hi itself so that rounding cannot lose a sliver.
        std::array<double, initial_panels + 1> edges{};
        for (unsigned i = 0; i < initial_panels; ++i) edges[i] = lo + (hi - lo) * i / initial_panels;
        edges[initial_panels] = hi;
        std::vector<candidate> candidates;
        candidates.reserve(initial_panels + max_splits);
        double coarse_mass = 0.0;
        for (unsigned i = 0; i < initial_panels; ++i) {
            candidates.push_back(examine(pdf, edges[i], edges[i + 1], rule(pdf, edges[i], edges[i + 1])));
            coarse_mass += candidates.back().left.mass + candidates.back().right.mass;
        }
        // Absolute floor for the check, so that panels where the density underflows are accepted.
        const double abs_tol = 1e-17 * coarse_mass;
        auto needs_split = [&](const candidate& c) {
            const double mass = c.left.mass + c.right.mass;
            const double tol = std::max(rel_tol * mass, abs_tol);
            // Narrower than 1e-12 of its position, a panel's nodes would crowd onto its edges (where a
            // singular density may be infinite) and its values are rounding noise: stop there.
            const bool wide = c.b - c.a > 1e-12 * std::max(std::abs(c.a), std::abs(c.b));
            return wide && (c.mass_error > tol || c.first_error > tol * 0.5 * (c.b - c.a));
        };
        auto larger_error = [&](std::size_t i, std::size_t j) { return candidates[i].mass_error < candidates[j].mass_error; };
        std::vector<std::size_t> heap;  // indices of candidates that need a split, largest mass error on top
        for (std::size_t i = 0; i < candidates.size(); ++i) {
            if (needs_split(candidates[i])) heap.push_back(i);
        }
        std::make_heap(heap.begin(), heap.end(), larger_error);
        for (std::size_t splits = 0; splits < max_splits && !heap.empty(); ++splits) {
            std::pop_heap(heap.begin(), heap.end(), larger_error);
            const std::size_t index = heap.back();
            heap.pop_back();
            const candidate parent = candidates[index];
            const double mid = 0.5 * (parent.a + parent.b);
            candidates[index] = examine(pdf, parent.a, mid, parent.left);
            candidates.push_back(examine(pdf, mid, parent.b, parent.right));
            for (const std::size_t child : {index, candidates.size() - 1}) {
                if (!needs_split(candidates[child])) continue;
                heap.push_back(child);
                std::push_heap(heap.begin(), heap.end(), larger_error);
            }
        }
        std::sort(candidates.begin(), candidates.end(), [](const candidate& x, const candidate& y) { return x.a < y.a; });
        bounds_.reserve(2 * candidates.size() + 1);
        moments_.reserve(2 * candidates.size());
        bounds_.push_back(lo);
        for (const candidate& c : candidates) {
            bounds_.push_back(0.5 * (c.a + c.b));
            bounds_.push_back(c.b);
            moments_.push_back(c.left);
            moments_.push_back(c.right);
        }
    }

    // Panel i is [bounds()[i], bounds()[i + 1]]; moments()[i] are its moments.
    const std::vector<double>& bounds() const noexcept { return bounds_; }
    const std::vector<panel_moments>& moments() const noexcept { return moments_; }

    // Moments of pdf over [a, b] by one application of the rule, first moment about (a + b) / 2.
    template <class Pdf>
    static panel_moments rule(const Pdf& pdf, double a, double b) {
        panel_moments m;
        const double centre = 0.5 * (a + b);
        for_each_gauss_node(a, b, [&](double x, double w) {
            const double p = checked(pdf, x);
            m.mass += w * p;
            m.first += w * (x - centre) * p;
        });
        return m;
    }

    // pdf(x), rejecting negative and non-finite values (a density that is not one).
    template <class Pdf>
    static double checked(const Pdf& pdf, double x) {
        const double p = pdf(x);
        if (!(p >= 0.0) || !std::isfinite(p)) {
            throw svq::invalid_argument(fmt::format("density value {} at x = {} is not finite and non-negative", p, x));
        }
        return p;
    }

private:
    // A panel [a, b] with the rule applied to its halves, and how far that is from the rule on the whole.
    struct candidate {
        double a = 0.0;
        double b = 0.0;
        panel_moments left;
        panel_moments right;
        double mass_error = 0.0;
        double first_error = 0.0;
    };

    template <class Pdf>
    static candidate examine(const Pdf& pdf, double a, double b, const panel_moments& whole) {
        candidate c;
        c.a = a;
        c.b = b;
        const double mid = 0.5 * (a + b);
        c.left = rule(pdf, a, mid);
        c.right = rule(pdf, mid, b);
        // The halves' first moments re-centred on the centre of [a, b] to compare with `whole`.
        const double quarter = 0.25 * (b - a);
        const double halves_first = c.left.first - quarter * c.left.mass + c.right.first + quarter * c.right.mass;
        c.mass_error = std::abs(whole.mass - (c.left.mass + c.right.mass));
        c.first_error = std::abs(whole.first - halves_first);
        return c;
    }

    std::vector<double> bounds_;
    std::vector<panel_moments> moments_;
};

}  // namespace svq::detail
