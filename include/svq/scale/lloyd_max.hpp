// Lloyd-Max: the scalar quantizer with least expected squared error for a known density, and the
// density-optimal gain quantizers built on it (docs/scale.md).
//
// The two optimality conditions are: each threshold is the midpoint of its two levels (nearest
// neighbour; scalar_quantizer enforces it by construction) and each level is the mean of the
// density over its cell (centroid). The levels solve level_i = centroid_i(levels); instead of the
// classical fixed-point iteration, whose convergence slows as the number of levels grows, Newton's
// method is applied to that system: the Jacobian is tridiagonal (a cell's centroid moves only with
// its two edges, each edge with its two levels) and its entries are closed forms, so a step costs
// one Thomas solve. A step that does not reduce the residual is halved, and as a last resort the
// plain Lloyd step (every level to its centroid, always ordered) is taken.
#pragma once

#include <svq/error.hpp>
#include <svq/scale/density.hpp>
#include <svq/scale/scalar_quantizer.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <numeric>
#include <span>
#include <utility>
#include <vector>

namespace svq {

namespace detail {

inline void check_bits(unsigned bits, const char* who) {
    if (bits == 0 || bits > scalar_quantizer::max_bits) {
        throw svq::invalid_argument(fmt::format("{}: bits {} outside [1, {}]", who, bits, scalar_quantizer::max_bits));
    }
}

// Outcome of a Lloyd-Max solve, with what tests and benchmarks want to know about the iteration.
struct lloyd_max_solution {
    std::vector<double> levels;
    unsigned iterations = 0;   // Newton or Lloyd steps taken
    double residual = 0.0;     // max_i |level_i - centroid_i| at the end
    double tolerance = 0.0;    // the residual aimed at: 1e-12 * (hi - lo)
    bool converged = false;    // residual <= tolerance
};

// Levels where the Panter-Dite high-resolution optimum puts them: quantiles (i + 1/2) / 2^bits of the
// density proportional to pdf^(1/3). Close to the answer already at a few bits, so Newton starts
// inside its basin.
inline std::vector<double> compander_levels(const density& d, std::size_t count) {
    const std::function<double(double)>& pdf = d.pdf();
    const density compander([&pdf](double x) { return std::cbrt(pdf(x)); }, d.lo(), d.hi());
    std::vector<double> levels(count);
    for (std::size_t i = 0; i < count; ++i) {
        levels[i] = compander.quantile((static_cast<double>(i) + 0.5) / static_cast<double>(count));
    }
    if (!std::is_sorted(levels.begin(), levels.end()) ||
        std::adjacent_find(levels.begin(), levels.end()) != levels.end()) {
        // A density with gaps can give repeated quantiles: start from a uniform grid instead.
        for (std::size_t i = 0; i < count; ++i) {
            levels[i] = d.lo() + (d.hi() - d.lo()) * (static_cast<double>(i) + 0.5) / static_cast<double>(count);
        }
    }
    return levels;
}

// Cells of a set of levels under a density: edges, mass, and residual level - centroid.
struct lloyd_cells {
    std::vector<double> edges;     // count + 1: lo, midpoints, hi
    std::vector<double> mass;      // count
    std::vector<double> residual;  // count: level - centroid (the midpoint of the cell if it has no mass)
    double norm = 0.0;             // max |residual|

    explicit lloyd_cells(std::size_t count) : edges(count + 1), mass(count), residual(count) {}

    void evaluate(const density& d, const std::vector<double>& levels) {
        const std::size_t count = levels.size();
        edges.front() = d.lo();
        edges.back() = d.hi();
        for (std::size_t i = 1; i < count; ++i) edges[i] = std::midpoint(levels[i - 1], levels[i]);
        norm = 0.0;
        for (std::size_t i = 0; i < count; ++i) {
            const detail::panel_moments m = d.moments_about(edges[i], edges[i + 1], levels[i]);
            mass[i] = m.mass;
            residual[i] = m.mass > 0.0 ? -m.first / m.mass : levels[i] - std::midpoint(edges[i], edges[i + 1]);
            norm = std::max(norm, std::abs(residual[i]));
        }
    }
};

inline bool ordered_inside(const std::vector<double>& levels, double lo, double hi) noexcept {
    if (!(levels.front() >= lo) || !(levels.back() <= hi)) return false;
    for (std::size_t i = 1; i < levels.size(); ++i) {
        if (!(levels[i - 1] < levels[i])) return false;
    }
    return true;
}

// Newton direction for r(y) = y - c(y) = 0 at the levels y with cells `cells`; false when the
// tridiagonal system is singular. With c_i the centroid of [t_i, t_i+1] and m_i its mass,
//   dc_i/dt_i = p(t_i) (c_i - t_i) / m_i,   dc_i/dt_i+1 = p(t_i+1) (t_i+1 - c_i) / m_i,
// and t_i = (y_i-1 + y_i) / 2 for the inner edges (the outer edges lo and hi are fixed).
inline bool newton_direction(const density& d, const std::vector<double>& levels, const lloyd_cells& cells,
                             std::vector<double>& direction) {
    const std::size_t count = levels.size();
    std::vector<double> sub(count), diag(count), super(count), edge_pdf(count + 1, 0.0);
    for (std::size_t i = 1; i < count; ++i) edge_pdf[i] = d(cells.edges[i]);
    for (std::size_t i = 0; i < count; ++i) {
        const double m = cells.mass[i];
        const double centroid = levels[i] - cells.residual[i];
        const double d_lower = (i > 0 && m > 0.0) ? edge_pdf[i] * (centroid - cells.edges[i]) / m : 0.0;
        const double d_upper = (i + 1 < count && m > 0.0) ? edge_pdf[i + 1] * (cells.edges[i + 1] - centroid) / m : 0.0;
        sub[i] = -0.5 * d_lower;
        diag[i] = 1.0 - 0.5 * (d_lower + d_upper);
        super[i] = -0.5 * d_upper;
    }
    // Thomas algorithm for J direction = -residual.
    direction.resize(count);
    std::vector<double> c_prime(count);
    double denom = diag[0];
    if (!(std::abs(denom) > 1e-300)) return false;
    c_prime[0] = super[0] / denom;
    direction[0] = -cells.residual[0] / denom;
    for (std::size_t i = 1; i < count; ++i) {
        denom = diag[i] - sub[i] * c_prime[i - 1];
        if (!(std::abs(denom) > 1e-300)) return false;
        c_prime[i] = super[i] / denom;
        direction[i] = (-cells.residual[i] - sub[i] * direction[i - 1]) / denom;
    }
    for (std::size_t i = count - 1; i-- > 0;) direction[i] -= c_prime[i] * direction[i + 1];
    return std::all_of(direction.begin(), direction.end(), [](double v) { return std::isfinite(v); });
}

inline lloyd_max_solution solve_lloyd_max(const density& d, unsigned bits) {
    check_bits(bits, "lloyd_max");
    constexpr unsigned max_iterations = 200;
    const std::size_t count = std::size_t{1} << bits;
    const double lo = d.lo();
    const double hi = d.hi();

    lloyd_max_solution out;
    out.tolerance = 1e-12 * (hi - lo);
    std::vector<double> levels = compander_levels(d, count);
    std::vector<double> trial(count);
    std::vector<double> direction;
    lloyd_cells cells(count);
    lloyd_cells trial_cells(count);
    cells.evaluate(d, levels);

    while (cells.norm > out.tolerance && out.iterations < max_iterations) {
        ++out.iterations;
        bool moved = false;
        if (newton_direction(d, levels, cells, direction)) {
            for (double step = 1.0; step >= 1.0 / 16.0 && !moved; step *= 0.5) {
                for (std::size_t i = 0; i < count; ++i) trial[i] = levels[i] + step * direction[i];
                if (!ordered_inside(trial, lo, hi)) continue;
                trial_cells.evaluate(d, trial);
                if (trial_cells.norm < cells.norm) {
                    levels.swap(trial);
                    std::swap(cells, trial_cells);
                    moved = true;
                }
            }
        }
        if (moved) continue;
        // Within a few thousand ulps of the fixed point rounding stops every step from helping.
        if (cells.norm <= 1e3 * out.tolerance) break;
        for (std::size_t i = 0; i < count; ++i) trial[i] = levels[i] - cells.residual[i];
        if (!ordered_inside(trial, lo, hi)) break;
        levels.swap(trial);
        cells.evaluate(d, levels);
    }
    out.residual = cells.norm;
    out.converged = cells.norm <= out.tolerance;
    out.levels = std::move(levels);
    return out;
}

}  // namespace detail

// The Lloyd-Max quantizer of 2^bits levels for a density (bits 1..16; designed for <= 10, where it
// takes well under 10 ms): levels are the centroids of their cells to ~1e-12 * (hi - lo).
inline scalar_quantizer lloyd_max(const density& d, unsigned bits) {
    return scalar_quantizer(detail::solve_lloyd_max(d, bits).levels);
}

// The same for a density given as a function on [lo, hi] (need not be normalised; the range should
// hold essentially all its mass, since cells end at lo and hi).
inline scalar_quantizer lloyd_max(const std::function<double(double)>& pdf, double lo, double hi, unsigned bits) {
    detail::check_bits(bits, "lloyd_max");
    return lloyd_max(density(pdf, lo, hi), bits);
}

// Optimal quantizer for the norm of dim iid N(0, sigma^2) values (sigma * chi(dim)).
inline scalar_quantizer optimal_chi_quantizer(unsigned dim, unsigned bits, double sigma = 1.0) {
    detail::check_bits(bits, "optimal_chi_quantizer");
    return lloyd_max(chi_density(dim, sigma), bits);
}

// Optimal quantizer for ||group|| / ||row|| = sqrt(Beta(dim/2, (row_len - dim)/2)), a group of dim
// weights in a row of row_len iid Gaussian weights. For a row divided by its RMS, the gain of a group
// is sqrt(row_len) times this variable: use .scaled(std::sqrt(row_len)).
inline scalar_quantizer optimal_beta_norm_quantizer(unsigned dim, unsigned row_len, unsigned bits) {
    detail::check_bits(bits, "optimal_beta_norm_quantizer");
    return lloyd_max(beta_norm_density(dim, row_len), bits);
}

// E[(X - Q(X))^2] for X distributed as the density normalised on [lo, hi] (cells cut to the range).
inline double expected_mse(const scalar_quantizer& q, const density& d) {
    const std::span<const double> levels = q.levels();
    const std::span<const double> thresholds = q.thresholds();
    double sum = 0.0;
    for (std::size_t i = 0; i < levels.size(); ++i) {
        const double a = i == 0 ? d.lo() : thresholds[i - 1];
        const double b = i + 1 == levels.size() ? d.hi() : thresholds[i];
        const double level = levels[i];
        sum += d.integrate(a, b, [level](double x) {
            const double e = x - level;
            return e * e;
        });
    }
    return sum / d.mass();
}

inline double expected_mse(const scalar_quantizer& q, const std::function<double(double)>& pdf, double lo, double hi) {
    return expected_mse(q, density(pdf, lo, hi));
}

}  // namespace svq
