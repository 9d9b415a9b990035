// PVQ search: the point of the pyramid P(N, K) = { y in Z^N : sum |y_i| = K } whose direction is
// closest to a vector x, i.e. the y maximising (x.y)^2 / (y.y) with sign(y_i) = sign(x_i).
// Also a diagonal-metric variant maximising (sum w_i x_i y_i)^2 / (sum w_i y_i^2).
//
// Steps (docs/pvq.md has the mathematics and the test that checks each):
//   1. projection  y_i = floor(K' |x_i| / sum |x|) with K' = K - 1/2, which never exceeds K pulses;
//   2. greedy      each remaining pulse goes where it maximises (xy + w_i|x_i|)^2 / (yy + w_i (2 y_i + 1));
//   3. refinement  single-pulse moves a -> b while the objective strictly improves, then (by default
//                  for the weighted search only) a short sweep along the parametric path of optimal
//                  points, polished again by single moves;
//   4. signs       y_i takes the sign of x_i.
// Every candidate score is computed elementwise with the same IEEE operations (t = xy + wa_i,
// t * t / (yy + inc_i), no multiply-add that could be contracted) in the scalar and the SIMD
// bodies, and the argmax rule (largest score, smallest index on ties) does not depend on the
// order of evaluation, so the two bodies return bit-identical y.
#pragma once

#include <svq/error.hpp>
#include <svq/simd/compat.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

namespace svq {

struct search_options {
    bool refine = true;         // run the pulse-move refinement after greedy
    int max_refine_passes = 8;  // full passes over all (from, to) moves; stop early when none improves (<= 0: none)
    // After refinement, follow the parametric path of optimal points (docs/pvq.md) this many pulse moves
    // each way and keep the best point met (<= 32; 0: off; only with refine). It escapes the single-move
    // local optima that a diagonal metric creates: the weighted search uses it by default.
    int sweep_steps = 0;           // unweighted search
    int weighted_sweep_steps = 4;  // weighted search (pvq_search_weighted with unequal weights)
};

namespace detail {

// Knobs that only tests and experiments change; the defaults are what the public functions use.
struct search_tuning {
    // The projection uses K' = pulses - projection_slack. Any slack > 0 keeps the projected point at
    // or below K pulses for dim < 2^20 (see docs); a negative slack forces the overshoot path.
    double projection_slack = 0.5;
    // Skip from-coordinates that a closed-form bound proves cannot take part in an improving move.
    // The bound is conservative, so switching it off changes the running time only, never y.
    bool screen_moves = true;
};

// Scratch the detail kernels need: pvq_search_scratch_size(dim) doubles (weighted or not).
constexpr std::size_t pvq_search_scratch_size(std::size_t dim) noexcept { return 2 * dim; }

// Result of one candidate scan: the winning coordinate and its score t^2 / den.
struct pulse_candidate {
    std::size_t index;
    double score;
};

// Scalar scan. wa: dim values w_i |x_i|; inc: dim values w_i (2 y_i + 1). Returns the first index
// maximising (xy + wa_i)^2 / (yy + inc_i), i.e. the best coordinate to receive one more pulse.
inline pulse_candidate best_pulse_scalar(const double* wa, const double* inc, std::size_t dim, double xy,
                                         double yy) noexcept {
    pulse_candidate best{0, -1.0};  // every score is >= 0, so index 0 always replaces this
    for (std::size_t i = 0; i < dim; ++i) {
        const double t = xy + wa[i];
        const double score = (t * t) / (yy + inc[i]);
        if (score > best.score) best = {i, score};
    }
    return best;
}

// SIMD scan over batch<double, Arch>, same contract and same result as best_pulse_scalar: each lane
// keeps its first maximum (strict >), lanes are merged by (largest score, smallest index), and the
// tail, whose indices exceed every lane's, is scanned in scalar with strict >.
template <class Arch>
inline pulse_candidate best_pulse_simd(Arch, const double* wa, const double* inc, std::size_t dim, double xy,
                                       double yy) noexcept {
    using batch = xsimd::batch<double, Arch>;
    constexpr std::size_t lanes = batch::size;
    pulse_candidate best{0, -1.0};
    std::size_t i = 0;
    if (dim >= lanes) {
        alignas(Arch::alignment()) std::array<double, lanes> lane_indices;
        for (std::size_t k = 0; k < lanes; ++k) lane_indices[k] = static_cast<double>(k);
        batch index = batch::load_aligned(lane_indices.data());  // indices as doubles: exact below 2^53
        const batch index_step(static_cast<double>(lanes));
        const batch xy_b(xy);
        const batch yy_b(yy);
        batch best_score(-1.0);
        batch best_index(0.0);
        for (; i + lanes <= dim; i += lanes) {
            const batch t = xy_b + batch::load_unaligned(wa + i);
            const batch score = (t * t) / (yy_b + batch::load_unaligned(inc + i));
            const auto better = score > best_score;
            best_score = xsimd::select(better, score, best_score);
            best_index = xsimd::select(better, index, best_index);
            index += index_step;
        }
        // Merge lanes: the largest score, then the smallest index among the lanes holding it
        // (a minimum taken as minus the maximum of the negated indices).
        const double score = simd::reduce_max(best_score);
        const batch negated_index =
            xsimd::select(best_score == batch(score), -best_index, batch(-std::numeric_limits<double>::infinity()));
        best = {static_cast<std::size_t>(-simd::reduce_max(negated_index)), score};
    }
    for (; i < dim; ++i) {
        const double t = xy + wa[i];
        const double score = (t * t) / (yy + inc[i]);
        if (score > best.score) best = {i, score};
    }
    return best;
}

struct scalar_scan {
    pulse_candidate operator()(const double* wa, const double* inc, std::size_t dim, double xy,
                               double yy) const noexcept {
        return best_pulse_scalar(wa, inc, dim, xy, yy);
    }
};

template <class Arch>
struct simd_scan {
    pulse_candidate operator()(const double* wa, const double* inc, std::size_t dim, double xy,
                               double yy) const noexcept {
        return best_pulse_simd(Arch{}, wa, inc, dim, xy, yy);
    }
};

// The search shared by every body; only the candidate scan (the O(dim) inner loop) differs.
// x: dim floats (finite); w: dim floats (finite, > 0) or nullptr for the unweighted search;
// y: dim ints (out); scratch: pvq_search_scratch_size(dim) doubles. dim >= 1, pulses >= 1.
template <class Scan>
void search_driver(Scan scan, const float* x, const float* w, std::size_t dim, int pulses, int* y,
                   const search_options& opt, double* scratch, const search_tuning& tuning) noexcept {
    double* const wa = scratch;         // w_i |x_i|: what one pulse at i adds to xy
    double* const inc = scratch + dim;  // w_i (2 y_i + 1): what one pulse at i adds to yy
    const auto weight = [w](std::size_t i) noexcept { return w != nullptr ? static_cast<double>(w[i]) : 1.0; };
    // A float times a float, or a float times an integer below 2^29, is exact in double, so wa and
    // inc carry no rounding: the only rounded quantities are the running sums xy and yy.
    const auto pulse_increment = [&](std::size_t i) noexcept { return weight(i) * (2.0 * y[i] + 1.0); };

    double abs_sum = 0.0;
    double wa_max = 0.0;
    for (std::size_t i = 0; i < dim; ++i) {
        const double a = std::fabs(static_cast<double>(x[i]));
        abs_sum += a;
        wa[i] = w != nullptr ? a * static_cast<double>(w[i]) : a;
        wa_max = std::max(wa_max, wa[i]);
    }
    if (!(abs_sum > 0.0)) {  // x == 0: every point is equally far; take the first axis
        y[0] = pulses;
        std::fill(y + 1, y + dim, 0);
        return;
    }

    // 1. Projection onto the pyramid, rounded down. With K' = K - 1/2 the sum of the floors is
    // below K' (1 + (dim + 2) eps) < K for dim < 2^20; the removal loop below covers the rest.
    const double scale = (static_cast<double>(pulses) - tuning.projection_slack) / abs_sum;
    long long placed = 0;
    for (std::size_t i = 0; i < dim; ++i) {
        const double target = std::fabs(static_cast<double>(x[i])) * scale;
        y[i] = target > 0.0 ? static_cast<int>(std::min(std::floor(target), static_cast<double>(pulses))) : 0;
        placed += y[i];
    }
    double xy = 0.0;  // sum w_i |x_i| y_i
    double yy = 0.0;  // sum w_i y_i^2
    for (std::size_t i = 0; i < dim; ++i) {
        xy += wa[i] * y[i];
        yy += weight(i) * (static_cast<double>(y[i]) * y[i]);
        inc[i] = pulse_increment(i);
    }

    // Overshoot (only possible with a negative slack or dim >= 2^20): remove, one at a time, the
    // pulse whose removal leaves the largest objective. placed >= 2 here, so yy stays > 0.
    while (placed > pulses) {
        pulse_candidate best{0, -1.0};
        for (std::size_t a = 0; a < dim; ++a) {
            if (y[a] == 0) continue;
            const double t = xy - wa[a];
            const double score = (t * t) / (yy - (inc[a] - 2.0 * weight(a)));
            if (score > best.score) best = {a, score};
        }
        const std::size_t a = best.index;
        --y[a];
        inc[a] = pulse_increment(a);
        xy = xy - wa[a];
        yy = yy - inc[a];
        --placed;
    }

    // 2. Greedy: each remaining pulse where it maximises the objective after it is placed.
    const auto add_pulse = [&](std::size_t b) noexcept {
        xy = xy + wa[b];   // the same two operations as the scan's t and den, so the new
        yy = yy + inc[b];  // objective xy^2 / yy equals the winning score bit for bit
        ++y[b];
        inc[b] = pulse_increment(b);
    };
    for (; placed < pulses; ++placed) add_pulse(scan(wa, inc, dim, xy, yy).index);

    // 3. Refinement by single-pulse moves a -> b. For each from-coordinate a (ascending) the pulse
    // is lifted off a and the scan finds the best b for it; the move is kept when b != a and the
    // objective strictly increases (first improvement over a, best b per a). Passes repeat until
    // one makes no move or max_refine_passes is reached.
    if (opt.refine && dim > 1) {
        double objective = (xy * xy) / yy;
        // Screen (docs/pvq.md): a move a -> b improves iff G_b - L_a + yy (wa_b - wa_a)^2 > 0
        // with G_b = p wa_b - q inc_b, L_a = p wa_a - q w_a (2 y_a - 1), p = 2 xy yy, q = xy^2.
        double p = 0.0, q = 0.0, g_max = 0.0, margin = 0.0;
        bool screen_stale = true;
        const auto refresh_screen = [&]() noexcept {
            p = 2.0 * xy * yy;
            q = xy * xy;
            g_max = -std::numeric_limits<double>::infinity();
            double inc_max = 0.0;
            for (std::size_t b = 0; b < dim; ++b) {
                g_max = std::max(g_max, p * wa[b] - q * inc[b]);
                inc_max = std::max(inc_max, inc[b]);
            }
            // Far above the rounding of both the screen and the exact comparison (~1e-15 relative).
            margin = 1e-9 * (q * (yy + inc_max) + p * wa_max + yy * wa_max * wa_max);
            screen_stale = false;
        };
        const auto cannot_improve_from = [&](std::size_t a) noexcept {
            const double loss = p * wa[a] - q * (inc[a] - 2.0 * weight(a));
            const double reach = std::max(wa[a], wa_max - wa[a]);  // bound on |wa_b - wa_a|
            return loss - g_max - yy * (reach * reach) > margin;
        };
        // One pass over every from-coordinate; true when some move was kept.
        const auto single_move_pass = [&]() noexcept {
            bool moved = false;
            for (std::size_t a = 0; a < dim; ++a) {
                if (y[a] == 0) continue;
                if (tuning.screen_moves) {
                    if (screen_stale) refresh_screen();
                    if (cannot_improve_from(a)) continue;
                }
                const double xy_before = xy;
                const double yy_before = yy;
                const double inc_before = inc[a];
                --y[a];
                inc[a] = pulse_increment(a);
                xy = xy - wa[a];
                yy = yy - inc[a];
                const pulse_candidate to = scan(wa, inc, dim, xy, yy);
                if (to.index != a && to.score > objective) {
                    add_pulse(to.index);
                    objective = to.score;
                    moved = true;
                    screen_stale = true;
                } else {
                    ++y[a];
                    inc[a] = inc_before;
                    xy = xy_before;
                    yy = yy_before;
                }
            }
            return moved;
        };
        int passes = 0;
        while (passes < opt.max_refine_passes && single_move_pass()) ++passes;

        // Parametric sweep (docs/pvq.md, "Search"): max_y (xy)^2 / yy = max_{s > 0} max_y
        // sum_i (2 s wa_i y_i - w_i y_i^2), and for fixed s the inner problem is separable and concave,
        // so its optimum y(s) takes the K largest marginals 2 s wa_i - w_i (2 j + 1). The optimum of the
        // ratio is y(s*) for s* = yy / xy at the optimum. y(s) changes by one pulse move at each
        // crossing of two marginals; the sweep follows that path a few crossings each way from the
        // current s = yy / xy, through points worse than the current one, and keeps the best point met.
        const int sweep = w != nullptr ? opt.weighted_sweep_steps : opt.sweep_steps;
        if (sweep > 0) {
            struct move {
                std::size_t from, to;
            };
            constexpr int max_steps = 32;
            std::array<std::array<move, max_steps>, 2> paths{};  // [0]: s increasing, [1]: s decreasing
            const int steps = std::min(sweep, max_steps);
            const auto apply = [&](const move& m) noexcept {
                --y[m.from];
                inc[m.from] = pulse_increment(m.from);
                xy = xy - wa[m.from];
                yy = yy - inc[m.from];
                add_pulse(m.to);
            };
            const auto undo = [&](const move& m) noexcept { apply(move{m.to, m.from}); };
            const double xy_start = xy, yy_start = yy;
            double best_objective = objective;
            int best_path = -1, best_step = 0;  // -1: the starting point
            for (int p_index = 0; p_index < 2; ++p_index) {
                const double direction = p_index == 0 ? 1.0 : -1.0;
                auto& path = paths[static_cast<std::size_t>(p_index)];
                double s = yy / xy;
                int taken = 0;
                for (; taken < steps; ++taken) {
                    // Next crossing beyond s: the marginal of i's last pulse, 2 s wa_i - w_i (2 y_i - 1), meets
                    // that of k's next pulse, 2 s wa_k - w_k (2 y_k + 1); past it y(s) moves a pulse i -> k.
                    double best_ds = std::numeric_limits<double>::infinity();
                    move next{dim, dim};
                    for (std::size_t i = 0; i < dim; ++i) {
                        if (y[i] == 0) continue;
                        const double lose = inc[i] - 2.0 * weight(i);
                        for (std::size_t k = 0; k < dim; ++k) {
                            const double gap = wa[k] - wa[i];
                            if (k == i || !(direction * gap > 0.0)) continue;
                            const double ds = direction * ((inc[k] - lose) / (2.0 * gap) - s);
                            if (ds >= -1e-12 * s && ds < best_ds) {
                                best_ds = ds;
                                next = {i, k};
                            }
                        }
                    }
                    if (next.from == dim) break;
                    s += direction * best_ds;
                    apply(next);
                    path[static_cast<std::size_t>(taken)] = next;
                    const double score = (xy * xy) / yy;
                    if (score > best_objective) {
                        best_objective = score;
                        best_path = p_index;
                        best_step = taken + 1;
                    }
                }
                const int keep = p_index == 1 && best_path == 1 ? best_step : 0;
                while (taken > keep) undo(path[static_cast<std::size_t>(--taken)]);
                if (keep == 0) {  // back at the start: restore the sums exactly
                    xy = xy_start;
                    yy = yy_start;
                }
            }
            if (best_path == 0) {  // the best point lies up the first path: walk it again from the start
                for (int m = 0; m < best_step; ++m) apply(paths[0][static_cast<std::size_t>(m)]);
            }
            if (best_path >= 0) {  // a new point: polish it with single moves
                objective = (xy * xy) / yy;
                screen_stale = true;
                for (int pass = 0; pass < opt.max_refine_passes && single_move_pass(); ++pass) {
                }
            }
        }
    }

    // 4. Signs. x_i == 0 (either sign of zero) keeps y_i >= 0.
    for (std::size_t i = 0; i < dim; ++i) y[i] = x[i] < 0.0f ? -y[i] : y[i];
}

// True when every weight equals w[0]: the weighted objective is then the plain one times w[0], and
// the weighted kernels run the unweighted search so both return exactly the same point.
inline bool weights_all_equal(const float* w, std::size_t dim) noexcept {
    return std::all_of(w, w + dim, [first = w[0]](float v) { return v == first; });
}

// Hot-path kernels: no validation, no allocation. x: dim floats, finite; w: dim floats, finite and
// > 0; y: dim ints (out); scratch: pvq_search_scratch_size(dim) doubles; dim >= 1, pulses >= 1.
template <class Arch>
void pvq_search_kernel(Arch, const float* x, std::size_t dim, int pulses, int* y, const search_options& opt,
                       double* scratch, const search_tuning& tuning = {}) noexcept {
    search_driver(simd_scan<Arch>{}, x, nullptr, dim, pulses, y, opt, scratch, tuning);
}

inline void pvq_search_kernel_scalar(const float* x, std::size_t dim, int pulses, int* y, const search_options& opt,
                                     double* scratch, const search_tuning& tuning = {}) noexcept {
    search_driver(scalar_scan{}, x, nullptr, dim, pulses, y, opt, scratch, tuning);
}

template <class Arch>
void pvq_search_weighted_kernel(Arch, const float* x, const float* w, std::size_t dim, int pulses, int* y,
                                const search_options& opt, double* scratch, const search_tuning& tuning = {}) noexcept {
    search_driver(simd_scan<Arch>{}, x, weights_all_equal(w, dim) ? nullptr : w, dim, pulses, y, opt, scratch, tuning);
}

inline void pvq_search_weighted_kernel_scalar(const float* x, const float* w, std::size_t dim, int pulses, int* y,
                                              const search_options& opt, double* scratch,
                                              const search_tuning& tuning = {}) noexcept {
    search_driver(scalar_scan{}, x, weights_all_equal(w, dim) ? nullptr : w, dim, pulses, y, opt, scratch, tuning);
}

// Dispatch once: the SIMD body for Arch when it is a real architecture, else the scalar body.
// A template so that the branch not taken is never instantiated.
template <class Arch = simd::default_arch>
void pvq_search_dispatch(const float* x, const float* w, std::size_t dim, int pulses, int* y, const search_options& opt,
                         double* scratch) noexcept {
    if constexpr (Arch::supported()) {
        if (w != nullptr)
            pvq_search_weighted_kernel(Arch{}, x, w, dim, pulses, y, opt, scratch);
        else
            pvq_search_kernel(Arch{}, x, dim, pulses, y, opt, scratch);
    } else {
        if (w != nullptr)
            pvq_search_weighted_kernel_scalar(x, w, dim, pulses, y, opt, scratch);
        else
            pvq_search_kernel_scalar(x, dim, pulses, y, opt, scratch);
    }
}

inline void validate_search_arguments(std::string_view function, std::span<const float> x, int pulses,
                                      std::span<int> y) {
    if (x.empty()) throw invalid_argument(fmt::format("{}: x is empty (dim must be >= 1)", function));
    if (y.size() != x.size())
        throw invalid_argument(fmt::format("{}: x has {} elements but y has {}", function, x.size(), y.size()));
    if (pulses < 1) throw invalid_argument(fmt::format("{}: pulses = {} must be >= 1", function, pulses));
    for (std::size_t i = 0; i < x.size(); ++i)
        if (!std::isfinite(x[i]))
            throw invalid_argument(fmt::format("{}: x[{}] = {} is not finite", function, i, x[i]));
}

inline void validate_search_weights(std::string_view function, std::span<const float> x, std::span<const float> w) {
    if (w.size() != x.size())
        throw invalid_argument(fmt::format("{}: x has {} elements but w has {}", function, x.size(), w.size()));
    for (std::size_t i = 0; i < w.size(); ++i)
        if (!std::isfinite(w[i]) || !(w[i] > 0.0f))
            throw invalid_argument(fmt::format("{}: w[{}] = {} must be finite and > 0", function, i, w[i]));
}

inline void validate_search_scratch(std::string_view function, std::size_t dim, std::span<double> scratch) {
    if (scratch.size() < pvq_search_scratch_size(dim))
        throw invalid_argument(fmt::format("{}: scratch has {} doubles but dim = {} needs {}", function, scratch.size(),
                                           dim, pvq_search_scratch_size(dim)));
}

// Runs the search with scratch on the stack for small dim, on the heap otherwise.
inline void pvq_search_with_own_scratch(const float* x, const float* w, std::size_t dim, int pulses, int* y,
                                        const search_options& opt) {
    constexpr std::size_t stack_dim = 256;
    if (dim <= stack_dim) {
        std::array<double, pvq_search_scratch_size(stack_dim)> scratch;
        pvq_search_dispatch(x, w, dim, pulses, y, opt, scratch.data());
    } else {
        std::vector<double> scratch(pvq_search_scratch_size(dim));
        pvq_search_dispatch(x, w, dim, pulses, y, opt, scratch.data());
    }
}

}  // namespace detail

// x: dim floats (dim = x.size() >= 1), y: dim ints (out). pulses >= 1.
// Result: sum |y_i| == pulses exactly, y_i == 0 or sign(y_i) == sign(x_i) (x_i == 0 -> y_i >= 0).
// Throws svq::invalid_argument for a size mismatch, pulses < 1, or a non-finite x_i (message names index and value).
// A zero vector x gives y = (pulses, 0, ..., 0).
inline void pvq_search(std::span<const float> x, int pulses, std::span<int> y, const search_options& opt = {}) {
    detail::validate_search_arguments("pvq_search", x, pulses, y);
    detail::pvq_search_with_own_scratch(x.data(), nullptr, x.size(), pulses, y.data(), opt);
}

// Same, with caller scratch (no allocation): scratch holds >= detail::pvq_search_scratch_size(dim) doubles.
inline void pvq_search(std::span<const float> x, int pulses, std::span<int> y, const search_options& opt,
                       std::span<double> scratch) {
    detail::validate_search_arguments("pvq_search", x, pulses, y);
    detail::validate_search_scratch("pvq_search", x.size(), scratch);
    detail::pvq_search_dispatch(x.data(), nullptr, x.size(), pulses, y.data(), opt, scratch.data());
}

// Weighted (diagonal-metric) search: maximises (sum_i w_i x_i y_i)^2 / (sum_i w_i y_i^2) over the
// pyramid. w: dim floats, finite and > 0 (else invalid_argument). With all w_i equal it returns
// exactly the same point as pvq_search (it runs the unweighted search).
inline void pvq_search_weighted(std::span<const float> x, std::span<const float> w, int pulses, std::span<int> y,
                                const search_options& opt = {}) {
    detail::validate_search_arguments("pvq_search_weighted", x, pulses, y);
    detail::validate_search_weights("pvq_search_weighted", x, w);
    detail::pvq_search_with_own_scratch(x.data(), w.data(), x.size(), pulses, y.data(), opt);
}

// Same, with caller scratch: scratch holds >= detail::pvq_search_scratch_size(dim) doubles.
inline void pvq_search_weighted(std::span<const float> x, std::span<const float> w, int pulses, std::span<int> y,
                                const search_options& opt, std::span<double> scratch) {
    detail::validate_search_arguments("pvq_search_weighted", x, pulses, y);
    detail::validate_search_weights("pvq_search_weighted", x, w);
    detail::validate_search_scratch("pvq_search_weighted", x.size(), scratch);
    detail::pvq_search_dispatch(x.data(), w.data(), x.size(), pulses, y.data(), opt, scratch.data());
}

}  // namespace svq
