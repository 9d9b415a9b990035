// Comparison points for the optimal gain quantizer: uniform and logarithmic grids (each with the
// range that suits a density best, so that comparisons are fair), and Lloyd's algorithm fitted to
// data (1-D k-means), which is what a codec without a density model would do.
#pragma once

#include <svq/error.hpp>
#include <svq/scale/density.hpp>
#include <svq/scale/lloyd_max.hpp>
#include <svq/scale/scalar_quantizer.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <numeric>
#include <span>
#include <utility>
#include <vector>

namespace svq {

namespace detail {

inline void check_range(double lo, double hi, const char* who) {
    if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo < hi)) {
        throw svq::invalid_argument(fmt::format("{}: range [{}, {}] is not finite with lo < hi", who, lo, hi));
    }
}

}  // namespace detail

// 2^bits levels at the centres of equal cells of [lo, hi].
inline scalar_quantizer uniform_quantizer(double lo, double hi, unsigned bits) {
    detail::check_bits(bits, "uniform_quantizer");
    detail::check_range(lo, hi, "uniform_quantizer");
    const std::size_t count = std::size_t{1} << bits;
    std::vector<double> levels(count);
    const double step = (hi - lo) / static_cast<double>(count);
    for (std::size_t i = 0; i < count; ++i) levels[i] = lo + step * (static_cast<double>(i) + 0.5);
    return scalar_quantizer(std::move(levels));
}

// 2^bits levels at the centres of equal cells of [log lo, log hi] (a geometric grid), 0 < lo < hi.
inline scalar_quantizer log_quantizer(double lo, double hi, unsigned bits) {
    detail::check_bits(bits, "log_quantizer");
    detail::check_range(lo, hi, "log_quantizer");
    if (!(lo > 0.0)) throw svq::invalid_argument(fmt::format("log_quantizer: lo {} must be positive", lo));
    const std::size_t count = std::size_t{1} << bits;
    std::vector<double> levels(count);
    const double log_lo = std::log(lo);
    const double step = (std::log(hi) - log_lo) / static_cast<double>(count);
    for (std::size_t i = 0; i < count; ++i) levels[i] = std::exp(log_lo + step * (static_cast<double>(i) + 0.5));
    return scalar_quantizer(std::move(levels));
}

// Mean squared error of q over samples (n >= 1, all finite).
inline double empirical_mse(const scalar_quantizer& q, std::span<const double> samples) {
    if (samples.empty()) throw svq::invalid_argument("empirical_mse: no samples");
    double sum = 0.0;
    for (const double x : samples) {
        const double e = x - q.decode(q.encode(x));
        sum += e * e;
    }
    return sum / static_cast<double>(samples.size());
}

namespace detail {

// Outcome of Lloyd's algorithm on data, with what tests want to know about the iteration.
struct lloyd_fit_solution {
    std::vector<double> levels;
    unsigned iterations = 0;  // partition + centroid steps taken
    bool converged = false;   // a fixed point: the last step moved no sample to another cell
};

// Sorted copy of samples, rejecting non-finite values and fewer than `count` distinct ones.
inline std::vector<double> sorted_fit_samples(std::span<const double> samples, std::size_t count, unsigned bits) {
    std::vector<double> sorted(samples.begin(), samples.end());
    for (std::size_t i = 0; i < sorted.size(); ++i) {
        if (!std::isfinite(sorted[i]))
            throw svq::invalid_argument(fmt::format("lloyd_fit: sample {} is {}", i, sorted[i]));
    }
    std::sort(sorted.begin(), sorted.end());
    std::size_t distinct = sorted.empty() ? 0 : 1;
    for (std::size_t i = 1; i < sorted.size(); ++i) distinct += sorted[i] != sorted[i - 1] ? 1 : 0;
    if (distinct < count) {
        throw svq::invalid_argument(
            fmt::format("lloyd_fit: {} distinct samples, {} bits need at least {}", distinct, bits, count));
    }
    return sorted;
}

// Weighted points for the partition search: runs of the sorted samples merged into bins of about
// `target` samples each (a run of equal values is never split, so bins have disjoint value ranges and
// any contiguous group of them a mean strictly between its neighbours'). Sums are of (x - shift).
struct fit_bins {
    std::vector<double> count{0.0};  // prefix sums over bins: count, sum, sum of squares
    std::vector<double> sum{0.0};
    std::vector<double> square{0.0};
    std::size_t size() const noexcept { return count.size() - 1; }

    // A bin closes at the end of a run once it holds `target` samples or spans `width`.
    fit_bins(const std::vector<double>& sorted, double shift, std::size_t target, double width) {
        double c = 0.0, s = 0.0, q = 0.0;
        double start = sorted.front();
        for (std::size_t i = 0; i < sorted.size(); ++i) {
            const double x = sorted[i] - shift;
            c += 1.0;
            s += x;
            q += x * x;
            const bool run_ends = i + 1 == sorted.size() || sorted[i + 1] != sorted[i];
            const bool full = c >= static_cast<double>(target) || sorted[i] - start >= width;
            if (run_ends && (full || i + 1 == sorted.size())) {
                if (i + 1 < sorted.size()) start = sorted[i + 1];
                count.push_back(count.back() + c);
                sum.push_back(sum.back() + s);
                square.push_back(square.back() + q);
                c = s = q = 0.0;
            }
        }
    }

    // Sum of squared deviations from their mean of the samples in bins [a, b), a < b.
    double cost(std::size_t a, std::size_t b) const noexcept {
        const double c = count[b] - count[a];
        const double s = sum[b] - sum[a];
        return std::max(0.0, (square[b] - square[a]) - s * s / c);
    }
};

// One layer of the partition search: best[b] = min over a of previous[a] + cost(a, b) for b in
// [lo, hi], knowing that the best a is monotone in b (1-D k-means costs satisfy the quadrangle
// inequality), so the answer for the middle b splits the search range of the others.
inline void fit_layer(const fit_bins& bins, const std::vector<double>& previous, std::vector<double>& best,
                      std::vector<std::uint32_t>& arg, std::size_t lo, std::size_t hi, std::size_t opt_lo,
                      std::size_t opt_hi) {
    while (lo <= hi) {
        const std::size_t mid = lo + (hi - lo) / 2;
        double best_value = std::numeric_limits<double>::infinity();
        std::size_t best_a = opt_lo;
        for (std::size_t a = opt_lo; a <= std::min(opt_hi, mid - 1); ++a) {
            const double value = previous[a] + bins.cost(a, mid);
            if (value < best_value) {
                best_value = value;
                best_a = a;
            }
        }
        best[mid] = best_value;
        arg[mid] = static_cast<std::uint32_t>(best_a);
        if (mid > lo) fit_layer(bins, previous, best, arg, lo, mid - 1, opt_lo, best_a);
        lo = mid + 1;
        opt_lo = best_a;
    }
}

// Largest number of levels for which lloyd_fit starts from the partition search (its table holds
// levels * bins entries); above it the search would cost more than the quantizer is worth.
inline constexpr std::size_t fit_search_max_levels = 256;

// Starting levels from the data alone: the partition of the samples into `count` contiguous groups,
// with boundaries restricted to the edges of at most 32 * count bins, that minimises the squared
// error (dynamic programming over the bins, O(count * bins * log bins)); the levels are the groups'
// means. A bin holds n / (16 count) samples or spans (max - min) / (16 count), whichever comes
// first: equal-count bins alone are coarser than the optimal cells in the sparse tails (an optimal
// tail cell holds few samples). Plain Lloyd from the sample quantiles (cells of equal mass) stalls at 5+ bits: once a
// step moves no threshold past a sample it is a fixed point, and in the sparse tails that happens far from the optimum
// (measured on 2^18 chi(16) samples at 6 bits: 1.7% above the density-optimal MSE). The search finds the global optimum
// at bin resolution, and Lloyd on the raw samples polishes it.
inline std::vector<double> fit_search_levels(const std::vector<double>& sorted, std::size_t count, double shift) {
    const std::size_t n = sorted.size();
    const double resolution = 16.0 * static_cast<double>(count);
    fit_bins bins(sorted, shift,
                  std::max<std::size_t>(1, static_cast<std::size_t>(static_cast<double>(n) / resolution)),
                  (sorted.back() - sorted.front()) / resolution);
    // Too few bins (long runs of equal values): one bin per distinct value, of which there are >= count.
    if (bins.size() < count) bins = fit_bins(sorted, shift, 1, 0.0);
    const std::size_t m = bins.size();
    std::vector<double> previous(m + 1, std::numeric_limits<double>::infinity());
    std::vector<double> best(m + 1, std::numeric_limits<double>::infinity());
    std::vector<std::uint32_t> arg(count * (m + 1), 0);
    // One group: bins [0, b).
    for (std::size_t b = 1; b <= m; ++b) previous[b] = bins.cost(0, b);
    for (std::size_t k = 1; k < count; ++k) {
        // k + 1 groups over bins [0, b): b >= k + 1, the last group [a, b) with a >= k.
        std::vector<std::uint32_t> layer(m + 1, 0);
        std::fill(best.begin(), best.end(), std::numeric_limits<double>::infinity());
        fit_layer(bins, previous, best, layer, k + 1, m, k, m - 1);
        std::copy(layer.begin(), layer.end(), arg.begin() + static_cast<std::ptrdiff_t>(k * (m + 1)));
        previous.swap(best);
    }
    std::vector<double> levels(count);
    std::size_t end = m;
    for (std::size_t k = count; k-- > 0;) {
        const std::size_t begin = k == 0 ? 0 : arg[k * (m + 1) + end];
        levels[k] = shift + (bins.sum[end] - bins.sum[begin]) / (bins.count[end] - bins.count[begin]);
        end = begin;
    }
    return levels;
}

// Starting levels when the partition search is too costly (more than fit_search_max_levels): the
// sample quantiles (i + 1/2) / count of the distinct values.
inline std::vector<double> distinct_quantile_levels(const std::vector<double>& sorted, std::size_t count) {
    std::vector<double> distinct;
    std::unique_copy(sorted.begin(), sorted.end(), std::back_inserter(distinct));
    std::vector<double> levels(count);
    for (std::size_t i = 0; i < count; ++i) {
        levels[i] = distinct[static_cast<std::size_t>(
            (static_cast<double>(i) + 0.5) * static_cast<double>(distinct.size()) / static_cast<double>(count))];
    }
    return levels;
}

// Lloyd's algorithm on sorted data from strictly increasing `levels`: partition at the midpoints
// (a sample on a threshold goes to the lower cell, as in scalar_quantizer::encode), move each level to
// the mean of its cell, until a step moves no sample to another cell (then the levels are exactly
// the means of their cells: a fixed point) or max_iterations. Each step lowers the in-sample MSE or
// leaves it unchanged, so the result is never worse on the data than the start.
inline lloyd_fit_solution lloyd_iterate(const std::vector<double>& sorted, std::vector<double> levels) {
    constexpr unsigned max_iterations = 20000;
    const std::size_t n = sorted.size();
    const std::size_t count = levels.size();
    // Cell sums from prefix sums of (x - shift): shifting by the median keeps the partial sums small.
    const double shift = sorted[n / 2];
    std::vector<double> prefix(n + 1, 0.0);
    for (std::size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + (sorted[i] - shift);

    lloyd_fit_solution out;
    // ends[k]: number of samples in cells 0..k, i.e. samples <= threshold k (ends[count - 1] = n).
    std::vector<std::size_t> ends(count, n);
    std::vector<std::size_t> previous_ends(count, n + 1);
    for (; out.iterations < max_iterations; ++out.iterations) {
        for (std::size_t k = 0; k + 1 < count; ++k) {
            const double threshold = std::midpoint(levels[k], levels[k + 1]);
            ends[k] =
                static_cast<std::size_t>(std::upper_bound(sorted.begin(), sorted.end(), threshold) - sorted.begin());
        }
        if (ends == previous_ends) {
            out.converged = true;
            break;
        }
        for (std::size_t k = 0; k < count; ++k) {
            const std::size_t begin = k == 0 ? 0 : ends[k - 1];
            const std::size_t end = ends[k];
            // An empty cell keeps its level, which stays strictly between its neighbours' new levels.
            if (end > begin) levels[k] = shift + (prefix[end] - prefix[begin]) / static_cast<double>(end - begin);
        }
        previous_ends = ends;
    }
    out.levels = std::move(levels);
    return out;
}

inline lloyd_fit_solution solve_lloyd_fit(std::span<const double> samples, unsigned bits) {
    check_bits(bits, "lloyd_fit");
    const std::size_t count = std::size_t{1} << bits;
    const std::vector<double> sorted = sorted_fit_samples(samples, count, bits);
    if (count > fit_search_max_levels) return lloyd_iterate(sorted, distinct_quantile_levels(sorted, count));
    return lloyd_iterate(sorted, fit_search_levels(sorted, count, sorted[sorted.size() / 2]));
}

}  // namespace detail

// Lloyd's algorithm on data (1-D k-means, the data-fitted comparison point): levels start at the
// best partition of the samples at the resolution of ~16 * 2^bits equal-count bins
// (detail::fit_search_levels; sample quantiles above 8 bits) and move to the means of their cells
// until no sample changes cell. A local optimum on the data next to the global one. Needs at least
// 2^bits distinct finite samples.
inline scalar_quantizer lloyd_fit(std::span<const double> samples, unsigned bits) {
    return scalar_quantizer(detail::solve_lloyd_fit(samples, bits).levels);
}

// The same from given starting levels (e.g. the density-optimal quantizer): the result's in-sample MSE
// is at most that of `start`.
inline scalar_quantizer lloyd_fit(std::span<const double> samples, const scalar_quantizer& start) {
    const std::size_t count = start.size();
    const std::vector<double> sorted = detail::sorted_fit_samples(samples, count, start.bits());
    return scalar_quantizer(
        detail::lloyd_iterate(sorted, std::vector<double>(start.levels().begin(), start.levels().end())).levels);
}

namespace detail {

// Best range [quantile(p_lo), upper_quantile(p_hi)] for a grid family make(lo, hi, bits) under d: a
// coarse search over tail probabilities from 1e-12 to 0.35 on each side, then golden-section
// refinement of each tail (in log p) around the best pair. Grids that make() rejects (a log grid
// with lo <= 0) are skipped.
template <class Make>
scalar_quantizer best_range_quantizer(const density& d, unsigned bits, Make make, const char* who) {
    check_bits(bits, who);
    static constexpr std::array<double, 14> tails = {1e-12, 1e-10, 1e-8, 1e-6, 1e-5, 1e-4, 3e-4,
                                                     1e-3,  3e-3,  1e-2, 3e-2, 0.1,  0.2,  0.35};
    constexpr double rejected = std::numeric_limits<double>::infinity();
    auto cost = [&](double p_lo, double p_hi) {
        const double lo = d.quantile(p_lo);
        const double hi = d.upper_quantile(p_hi);
        if (!(lo < hi)) return rejected;
        try {
            return expected_mse(make(lo, hi, bits), d);
        } catch (const svq::invalid_argument&) {
            return rejected;
        }
    };
    std::size_t best_lo = 0;
    std::size_t best_hi = 0;
    double best = rejected;
    for (std::size_t i = 0; i < tails.size(); ++i) {
        for (std::size_t j = 0; j < tails.size(); ++j) {
            const double c = cost(tails[i], tails[j]);
            if (c < best) {
                best = c;
                best_lo = i;
                best_hi = j;
            }
        }
    }
    if (best == rejected) {
        throw svq::invalid_argument(
            fmt::format("{}: no grid of {} bits fits the density on [{}, {}]", who, bits, d.lo(), d.hi()));
    }
    auto bracket = [&](std::size_t i) {
        return std::pair{std::log(tails[i == 0 ? 0 : i - 1]), std::log(tails[std::min(i + 1, tails.size() - 1)])};
    };
    double log_lo = std::log(tails[best_lo]);
    double log_hi = std::log(tails[best_hi]);
    // Golden-section search of one coordinate on [a, b], keeping the best point seen.
    auto refine = [&](double a, double b, auto&& f, double& arg) {
        constexpr double inv_phi = 0.6180339887498949;
        double x1 = b - inv_phi * (b - a);
        double x2 = a + inv_phi * (b - a);
        double f1 = f(x1);
        double f2 = f(x2);
        for (int iter = 0; iter < 24; ++iter) {
            if (f1 <= f2) {
                b = x2;
                x2 = x1;
                f2 = f1;
                x1 = b - inv_phi * (b - a);
                f1 = f(x1);
            } else {
                a = x1;
                x1 = x2;
                f1 = f2;
                x2 = a + inv_phi * (b - a);
                f2 = f(x2);
            }
        }
        const double candidate = f1 <= f2 ? x1 : x2;
        const double value = std::min(f1, f2);
        if (value < best) {
            best = value;
            arg = candidate;
        }
    };
    for (int round = 0; round < 2; ++round) {
        const auto [lo_a, lo_b] = bracket(best_lo);
        refine(
            lo_a, lo_b, [&](double t) { return cost(std::exp(t), std::exp(log_hi)); }, log_lo);
        const auto [hi_a, hi_b] = bracket(best_hi);
        refine(
            hi_a, hi_b, [&](double t) { return cost(std::exp(log_lo), std::exp(t)); }, log_hi);
    }
    return make(d.quantile(std::exp(log_lo)), d.upper_quantile(std::exp(log_hi)), bits);
}

}  // namespace detail

// The uniform grid of 2^bits levels whose range minimises expected_mse under d.
inline scalar_quantizer best_uniform_quantizer(const density& d, unsigned bits) {
    return detail::best_range_quantizer(d, bits, uniform_quantizer, "best_uniform_quantizer");
}

// The logarithmic grid of 2^bits levels whose range minimises expected_mse under d (d must have mass above 0).
inline scalar_quantizer best_log_quantizer(const density& d, unsigned bits) {
    return detail::best_range_quantizer(d, bits, log_quantizer, "best_log_quantizer");
}

}  // namespace svq
