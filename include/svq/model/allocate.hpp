// Bit allocation across matrices: each matrix offers a few encodings (its
// rate/distortion candidates), and one is picked per matrix so that the sum
// of their losses is small while the sum of their stored bits stays within a
// budget. This is the multiple-choice knapsack. allocate_bits takes the
// Lagrangian choice (Shoham and Gersho 1988: optimal for the budget it
// spends, on the lower convex hull of each matrix's candidates), then
// upgrades greedily into the bits left over; that is not optimal in general
// (tests/test_model_methods.cpp measures it against exhaustive search), so a
// caller can pass a known feasible choice that wins when it is better.
#pragma once

#include <svq/error.hpp>

#include <fmt/format.h>

#include <cstddef>
#include <limits>
#include <vector>

namespace svq {

// One candidate encoding of one matrix.
struct rate_option {
    std::size_t bits = 0;  // every stored bit of the matrix in this encoding
    double loss = 0.0;     // what this encoding adds to the model's loss (an estimate)
};

// For each matrix the index of its chosen option, minimising the sum of
// losses with the sum of bits <= budget: the Lagrangian choice (argmin loss +
// lambda bits, ties to fewer bits) at the smallest lambda that fits,
// bisected, then greedy upgrades by loss saved per extra bit while the budget
// allows. `fallback` (one feasible choice, e.g. every matrix at the target
// rate) is returned instead when its loss is lower. Throws invalid_argument
// when a matrix has no option or when even the smallest choice is over the
// budget.
[[nodiscard]] inline std::vector<std::size_t> allocate_bits(const std::vector<std::vector<rate_option>>& options,
                                                            std::size_t budget,
                                                            const std::vector<std::size_t>& fallback = {}) {
    const std::size_t n = options.size();
    const auto total_loss = [&](const std::vector<std::size_t>& pick) {
        double sum = 0.0;
        for (std::size_t i = 0; i < n; ++i) sum += options[i][pick[i]].loss;
        return sum;
    };
    const auto bits = [&](const std::vector<std::size_t>& pick) {
        std::size_t sum = 0;
        for (std::size_t i = 0; i < n; ++i) sum += options[i][pick[i]].bits;
        return sum;
    };
    const auto pick_at = [&](double lambda) {
        std::vector<std::size_t> pick(n, 0);
        for (std::size_t i = 0; i < n; ++i) {
            double best = std::numeric_limits<double>::infinity();
            for (std::size_t j = 0; j < options[i].size(); ++j) {
                const double v = options[i][j].loss + lambda * static_cast<double>(options[i][j].bits);
                if (v < best || (v == best && options[i][j].bits < options[i][pick[i]].bits)) {
                    best = v;
                    pick[i] = j;
                }
            }
        }
        return pick;
    };
    // The smallest-bits choice must fit.
    std::vector<std::size_t> smallest(n, 0);
    for (std::size_t i = 0; i < n; ++i) {
        if (options[i].empty()) throw invalid_argument(fmt::format("allocate_bits: matrix {} has no option", i));
        for (std::size_t j = 1; j < options[i].size(); ++j)
            if (options[i][j].bits < options[i][smallest[i]].bits) smallest[i] = j;
    }
    if (bits(smallest) > budget)
        throw invalid_argument(fmt::format("allocate_bits: the smallest choice takes {} bits, over the budget {}",
                                           bits(smallest), budget));
    std::vector<std::size_t> pick = pick_at(0.0);
    if (bits(pick) > budget) {
        double lo = 0.0, hi = 1e-12;
        while (bits(pick_at(hi)) > budget && hi < 1e30) hi *= 4.0;
        pick = bits(pick_at(hi)) <= budget ? pick_at(hi) : smallest;
        for (int it = 0; it < 200 && hi > lo * (1.0 + 1e-12); ++it) {
            const double mid = 0.5 * (lo + hi);
            const std::vector<std::size_t> p = pick_at(mid);
            if (bits(p) <= budget) {
                hi = mid;
                pick = p;
            } else {
                lo = mid;
            }
        }
    }
    // Greedy upgrades into what is left.
    for (std::size_t used = bits(pick);;) {
        double best_ratio = 0.0;
        std::size_t bi = n, bj = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const rate_option& cur = options[i][pick[i]];
            for (std::size_t j = 0; j < options[i].size(); ++j) {
                const rate_option& o = options[i][j];
                if (!(o.loss < cur.loss) || used - cur.bits + o.bits > budget) continue;
                const double extra = static_cast<double>(o.bits) - static_cast<double>(cur.bits);
                const double ratio =
                    extra <= 0.0 ? std::numeric_limits<double>::infinity() : (cur.loss - o.loss) / extra;
                if (ratio > best_ratio) {
                    best_ratio = ratio;
                    bi = i;
                    bj = j;
                }
            }
        }
        if (bi == n) break;
        used = used - options[bi][pick[bi]].bits + options[bi][bj].bits;
        pick[bi] = bj;
    }
    for (std::size_t i = 0; i < fallback.size() && fallback.size() == n; ++i)
        if (fallback[i] >= options[i].size())
            throw invalid_argument(fmt::format("allocate_bits: fallback option {} of matrix {}, which has {}",
                                               fallback[i], i, options[i].size()));
    if (fallback.size() == n && bits(fallback) <= budget && total_loss(fallback) < total_loss(pick)) return fallback;
    return pick;
}

}  // namespace svq
