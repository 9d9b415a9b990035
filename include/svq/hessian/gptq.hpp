// Hessian-weighted PVQ (GPTQ-style blocked search) and the GPTQ-RTN baseline.
//
// The layer's output error over the calibration tokens is the proxy loss
// tr(dW H dW^T), H = X^T X / n (calibration.hpp). Columns are quantized left to
// right, one PVQ group (N columns) per row at a time; the error of a group is
// fed into the columns not yet quantized by the optimal (least-squares)
// correction, which the upper Cholesky factor U of H^-1 (H^-1 = U^T U) gives
// in closed form. With G the group's columns and R those after it:
//   err   = (x - q) T,        T = U_GG^-1            (the group's scaled error)
//   W_R  -= err U_GR                                  (error feedback)
//   loss  = sum over groups of ||err||^2              (exact: tr(dW H dW^T))
// so inside a group the metric is M = T T^T = (U_GG^T U_GG)^-1. The search
// uses its diagonal approximation 1/U_ii^2 (pvq_search_weighted); the gain is
// the exact minimiser under M, g* = <x T, u T> / <u T, u T> (u = y / ||y||),
// then coded by the matrix's gain quantizer for the row scale, and the value
// fed back is exactly what the decoder will produce. Updates are lazy: within
// a block of ~128 columns they reach only the block; the rest of the matrix
// gets one GEMM per block, W[:, b1:] -= Err U[b0:b1, b1:] (Eigen).
//
// Row scale: it must be known before the first group. It is the row scale the
// plain encoder would store for the (rotated) row (a first plain pass), so the
// gains stay on the levels the gain quantizer was built for; the codes are then
// chosen group by group for that stored scale.
//
// Rotation: with config.rotate the rows of W are rotated with the config's
// seeded hadamard_rotation and H is conjugated, R H R^T, so the loss is the same
// in the rotated basis, where quantization runs; the output is the ordinary
// quantized_matrix (same packed format and decoder as quantize(w, config)).
//
// With H = c I the factor U is diagonal with equal entries: the feedback is
// exactly zero, the weights are equal (pvq_search_weighted runs the plain
// search), the gain is the plain least-squares gain and the row scale is the
// plain one, so the codes equal the plain quantizer's (tests/test_hessian.cpp).
// A scaled identity is not conjugated (R c I R^T = c I), which keeps that exact
// with rotation too.
#pragma once

#include <svq/core/parallel.hpp>
#include <svq/error.hpp>
#include <svq/hessian/calibration.hpp>
#include <svq/matrix/auto_config.hpp>
#include <svq/format/layout.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/matrix/rtn.hpp>
#include <svq/pvq/pulses.hpp>
#include <svq/pvq/search.hpp>
#include <svq/rotate/hadamard_rotation.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <thread>
#include <vector>

namespace svq {

struct gptq_options {
    // Lazy-batch width in columns, rounded down to whole groups (at least one group).
    std::size_t block_columns = 128;
    // Rows are split over this many threads (0: std::thread::hardware_concurrency()).
    // Rows are independent given H, so the result does not depend on it.
    unsigned threads = 1;
    // Gain from the full group metric (U_GG^T U_GG)^-1 (true) or from its diagonal only.
    bool full_metric_gain = true;
    // After the diagonal-metric search, refine the point by single-pulse moves under the
    // full group metric (detail::refine_full_metric).
    bool full_metric_search = true;
    // Row scales tried: factors of the plain encoder's row scale; each row keeps the one
    // with the smallest proxy loss (one complete pass per factor). The first entry runs first.
    std::vector<double> row_scale_factors = {1.0};
    // Passes of coordinate descent after the blocked search (detail::refine_groups):
    // each group of each row is searched again for the exact proxy loss with every
    // other group of its row fixed, and kept only when that loss falls. The blocked
    // search sees only the groups before a group; this sees both sides. 0: none.
    int refine_passes = 2;
    // The Hessian choose_config also tries the candidates with the rotation
    // switched the other way from auto_config_options::rotate (one more factor of H).
    bool try_both_rotations = true;
};

namespace detail {

// Tests' view of the blocked search: on_block is called after each block with
// (first column, end column, the working matrix: rows x cols row-major doubles
// in the basis quantization runs in, columns < end quantized, the rest updated
// by the feedback). Setting it runs on one thread.
struct gptq_hooks {
    std::function<void(std::size_t, std::size_t, std::span<const double>)> on_block;
};

// True when h (dim x dim) is exactly c I for some c.
inline bool is_scaled_identity(std::span<const double> h, std::size_t dim) noexcept {
    for (std::size_t i = 0; i < dim; ++i)
        for (std::size_t j = 0; j < dim; ++j)
            if (i == j ? h[i * dim + j] != h[0] : h[i * dim + j] != 0.0) return false;
    return true;
}

// U upper triangular with U^T U = H^-1 (GPTQ's factor), without forming H^-1:
// with J the reversal permutation and J H J = L L^T (Eigen LLT),
// H = (J L J)(J L J)^T, so H^-1 = (J L^-1 J)^T (J L^-1 J) and U = J L^-1 J
// (upper triangular, positive diagonal: the unique Cholesky factor).
// Throws svq::invalid_argument when H is not positive definite.
inline Eigen::MatrixXd inverse_hessian_factor(std::span<const double> h, std::size_t dim, const char* who) {
    const auto n = static_cast<Eigen::Index>(dim);
    Eigen::MatrixXd a = Eigen::Map<const row_major_matrix>(h.data(), n, n).reverse();
    Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>> llt(a);
    if (llt.info() != Eigen::Success) check_positive_definite(h, dim, who);  // throws with the details
    if (llt.info() != Eigen::Success)
        throw invalid_argument(fmt::format("{}: the reversed {} x {} Hessian is not positive definite", who, dim, dim));
    Eigen::MatrixXd u = Eigen::MatrixXd::Identity(n, n);
    llt.matrixL().solveInPlace(u);
    u = u.reverse().eval();
    u.triangularView<Eigen::StrictlyLower>().setZero();
    return u;
}


// H in the basis quantization runs in (rotated when the config rotates).
inline std::vector<double> working_hessian(std::span<const double> h, std::size_t cols,
                                           const std::optional<hadamard_rotation>& rotation) {
    std::vector<double> hw(h.begin(), h.end());
    if (rotation && !is_scaled_identity(h, cols)) rotation->conjugate(hw);
    return hw;
}

// What the blocked search needs to know about one group of columns.
struct gptq_group {
    std::size_t first = 0, dim = 0;
    int pulses = 0;
    Eigen::MatrixXd t;             // U_GG^-1, dim x dim upper triangular
    Eigen::MatrixXd m;             // the group metric T T^T (only when not diagonal)
    std::vector<float> weights;    // search metric ~ 1 / U_ii^2, scaled so the largest U_ii gives 1
    bool plain = false;            // U_GG = c I: plain search and least-squares gain
    bool diagonal = false;         // U_GG diagonal
};

inline gptq_group make_gptq_group(const Eigen::MatrixXd& u, std::size_t first, std::size_t dim, std::size_t pulses) {
    gptq_group g;
    g.first = first;
    g.dim = dim;
    g.pulses = static_cast<int>(pulses);
    const auto f = static_cast<Eigen::Index>(first), d = static_cast<Eigen::Index>(dim);
    const auto block = u.block(f, f, d, d);
    g.t = Eigen::MatrixXd::Identity(d, d);
    block.triangularView<Eigen::Upper>().solveInPlace(g.t);
    double largest = 0.0;
    for (Eigen::Index i = 0; i < d; ++i) largest = std::max(largest, block(i, i));
    g.weights.resize(dim);
    bool equal = true, diagonal = true;
    for (Eigen::Index i = 0; i < d; ++i) {
        const double ratio = largest / block(i, i);
        g.weights[static_cast<std::size_t>(i)] =
            static_cast<float>(std::min(ratio * ratio, static_cast<double>(std::numeric_limits<float>::max())));
        equal = equal && block(i, i) == block(0, 0);
        for (Eigen::Index j = i + 1; j < d; ++j) diagonal = diagonal && block(i, j) == 0.0;
    }
    g.diagonal = diagonal;
    g.plain = diagonal && equal;
    if (!diagonal) g.m = g.t * g.t.transpose();
    return g;
}

// Refines a pyramid point y (sum |y| = K) for the full group metric M: moves single
// pulses (one off coordinate a, one onto b with the sign y_b has, or either sign where
// y_b = 0) while (x'My)^2 / y'My, the loss reduction of the best gain, rises with
// x'My > 0. Each candidate move is O(1) from Mx and My; an accepted move updates My
// in O(dim). The diagonal search that precedes it (pvq_search_weighted with the
// diagonal of M) leaves the cross terms of M aside; this pass takes them in.
inline double refine_full_metric(const float* x, const Eigen::MatrixXd& m, int* y, std::size_t dim,
                               std::vector<double>& mx, std::vector<double>& my, int max_passes = 32) {
    const auto d = static_cast<Eigen::Index>(dim);
    mx.assign(dim, 0.0);
    my.assign(dim, 0.0);
    for (Eigen::Index i = 0; i < d; ++i)
        for (Eigen::Index j = 0; j < d; ++j) {
            mx[static_cast<std::size_t>(i)] += m(i, j) * static_cast<double>(x[j]);
            my[static_cast<std::size_t>(i)] += m(i, j) * static_cast<double>(y[j]);
        }
    double xy = 0.0, yy = 0.0;
    for (std::size_t i = 0; i < dim; ++i) {
        xy += static_cast<double>(y[i]) * mx[i];
        yy += static_cast<double>(y[i]) * my[i];
    }
    for (int pass = 0; pass < max_passes; ++pass) {
        bool moved = false;
        for (std::size_t a = 0; a < dim; ++a) {
            if (y[a] == 0) continue;
            const double sa = y[a] > 0 ? 1.0 : -1.0;
            double best_xy = xy, best_yy = yy;
            std::size_t best_b = dim;
            double best_s = 0.0;
            for (std::size_t b = 0; b < dim; ++b) {
                if (b == a) continue;
                for (const double s : {1.0, -1.0}) {
                    if (y[b] != 0 && (y[b] > 0) != (s > 0)) continue;
                    const auto ai = static_cast<Eigen::Index>(a), bi = static_cast<Eigen::Index>(b);
                    const double nxy = xy + s * mx[b] - sa * mx[a];
                    const double nyy = yy + 2.0 * (s * my[b] - sa * my[a]) + m(bi, bi) + m(ai, ai) -
                                       2.0 * s * sa * m(ai, bi);
                    if (!(nxy > 0.0) || !(nyy > 0.0)) continue;
                    // nxy^2 / nyy > best_xy^2 / best_yy, with a margin against rounding.
                    if (nxy * nxy * best_yy > best_xy * best_xy * nyy * (1.0 + 1e-12)) {
                        best_xy = nxy;
                        best_yy = nyy;
                        best_b = b;
                        best_s = s;
                    }
                }
            }
            if (best_b == dim) continue;
            y[a] -= static_cast<int>(sa);
            y[best_b] += static_cast<int>(best_s);
            for (Eigen::Index i = 0; i < d; ++i)
                my[static_cast<std::size_t>(i)] += best_s * m(i, static_cast<Eigen::Index>(best_b)) -
                                                   sa * m(i, static_cast<Eigen::Index>(a));
            xy = best_xy;
            yy = best_yy;
            moved = true;
        }
        if (!moved) break;
    }
    return xy > 0.0 && yy > 0.0 ? xy * xy / yy : 0.0;
}

}  // namespace detail

namespace detail {

// The Hessian in the basis quantization runs in, and its factor U.
struct working_metric {
    row_major_matrix h;
    Eigen::MatrixXd u;
};
inline working_metric make_working_metric(std::span<const double> h, std::size_t cols,
                                          const std::optional<hadamard_rotation>& rotation, const char* who) {
    const std::vector<double> hw = working_hessian(h, cols, rotation);
    working_metric m;
    m.u = inverse_hessian_factor(hw, cols, who);
    const auto n = static_cast<Eigen::Index>(cols);
    m.h = Eigen::Map<const row_major_matrix>(hw.data(), n, n);
    return m;
}

// Coordinate descent on the codes of a finished matrix for the exact proxy loss
// (gptq_options::refine_passes). For one row with error e = x - q the loss is
// e'He. With every group but G fixed it is e_G' M e_G + 2 e_G' b + const, with
// M = H_GG and b = (eH)_G - M e_G the pull of the other groups' errors, so the
// best q_G is the point nearest to the target t = x_G + M^-1 b in the metric M.
// Candidates: the current point, and the current point, the diagonal-metric
// search point and the plain search point of t, each refined under M
// (refine_full_metric); each gets the gain code nearest to g* = u'Mt / u'Mu for
// the row's stored scale (the loss is a parabola in the gain), and the lowest
// exact loss replaces the current one only when it is lower: the loss never
// rises. Before each sweep the row scale is refitted the same way: for fixed
// points and gain codes the loss is the parabola x'Hx - 2 s x'Hv + s^2 v'Hv in
// s (v: the row decoded with scale 1), compared at the code of s* = x'Hv / v'Hv,
// its two neighbours and the current code.
// eH is kept current lazily: inside a block of columns after every group, the
// rest of the row with one GEMM per block (as the blocked search does); xH is
// computed once, and vH = (xH - eH) / s follows from it.
// wf: the rotated rows (rows x cols), hw: H in that basis (row-major cols x cols);
// scale_codes, points and codes are updated in place.
template <class Format>
void refine_groups(const std::vector<float>& wf, std::size_t rows, std::size_t cols, const row_major_matrix& hw,
                          const matrix_layout& layout, const Format& format, const search_options& search,
                          const row_scale_codec& scales, std::vector<std::uint32_t>& scale_codes,
                          std::vector<int>& points, std::vector<std::uint32_t>& codes, int passes,
                          std::size_t block_columns, unsigned threads) {
    if (passes <= 0) return;
    const std::size_t groups = layout.groups_per_row();
    struct group_metric {
        std::size_t first = 0, dim = 0;
        int pulses = 0;
        Eigen::MatrixXd m;
        Eigen::LLT<Eigen::MatrixXd> llt;
        std::vector<float> weights;
    };
    std::vector<group_metric> info(groups);
    for (std::size_t j = 0; j < groups; ++j) {
        group_metric& g = info[j];
        const bool full = j < layout.full_groups;
        g.first = j * layout.group_dim;
        g.dim = full ? layout.group_dim : layout.tail_dim;
        g.pulses = static_cast<int>(full ? layout.pulses : layout.tail_pulses);
        const auto f = static_cast<Eigen::Index>(g.first), d = static_cast<Eigen::Index>(g.dim);
        g.m = hw.block(f, f, d, d);
        g.llt.compute(g.m);
        double smallest = std::numeric_limits<double>::infinity();
        for (Eigen::Index i = 0; i < d; ++i) smallest = std::min(smallest, g.m(i, i));
        g.weights.resize(g.dim);
        for (Eigen::Index i = 0; i < d; ++i)
            g.weights[static_cast<std::size_t>(i)] = static_cast<float>(
                std::min(g.m(i, i) / smallest, static_cast<double>(std::numeric_limits<float>::max())));
    }
    const std::size_t block_groups = std::max<std::size_t>(1, block_columns / layout.group_dim);
    std::vector<double> stored(rows);
    for (std::size_t r = 0; r < rows; ++r) stored[r] = scales.decode(scale_codes[r]);

    const auto run_rows = [&](std::size_t r0, std::size_t r1) {
        if (r1 <= r0) return;
        const auto nr = static_cast<Eigen::Index>(r1 - r0), c_count = static_cast<Eigen::Index>(cols);
        std::vector<double> v(layout.group_dim);
        // The decoder's values of group j of row r (exactly what decode_row computes).
        const auto decode_group = [&](const int* y, std::size_t j, std::uint32_t code, double s) {
            const float factor = format.factor(s, j, format.gain_level(j, code), y);
            for (std::size_t k = 0; k < info[j].dim; ++k) v[k] = static_cast<double>(static_cast<float>(y[k]) * factor);
        };
        row_major_matrix x(nr, c_count), e(nr, c_count);
        for (Eigen::Index i = 0; i < nr; ++i)
            for (Eigen::Index c = 0; c < c_count; ++c)
                x(i, c) = static_cast<double>(wf[(r0 + static_cast<std::size_t>(i)) * cols + static_cast<std::size_t>(c)]);
        const auto set_error_row = [&](std::size_t r) {
            const auto i = static_cast<Eigen::Index>(r - r0);
            for (std::size_t j = 0; j < groups; ++j) {
                const auto f = static_cast<Eigen::Index>(info[j].first);
                decode_group(points.data() + r * cols + info[j].first, j, codes[r * groups + j], stored[r]);
                for (std::size_t k = 0; k < info[j].dim; ++k)
                    e(i, f + static_cast<Eigen::Index>(k)) = x(i, f + static_cast<Eigen::Index>(k)) - v[k];
            }
        };
        for (std::size_t r = r0; r < r1; ++r) set_error_row(r);
        const row_major_matrix xh = x * hw;
        row_major_matrix eh = e * hw;

        const auto refit_scales = [&] {
            for (std::size_t r = r0; r < r1; ++r) {
                const double s = stored[r];
                if (!(s > 0.0)) continue;
                const auto i = static_cast<Eigen::Index>(r - r0);
                // q = s v: x'Hv = (x'Hx - x'He) / s, v'Hv = (x'Hx - 2 x'He + e'He) / s^2.
                const double xhx = x.row(i).dot(xh.row(i)), xhe = x.row(i).dot(eh.row(i)), ehe = e.row(i).dot(eh.row(i));
                const double xhv = (xhx - xhe) / s, vhv = (xhx - 2.0 * xhe + ehe) / (s * s);
                if (!(vhv > 0.0) || !(xhv > 0.0)) continue;
                const auto parabola = [&](double sc) { return sc * (sc * vhv - 2.0 * xhv); };
                const std::uint32_t centre = scales.encode(xhv / vhv);
                const std::uint32_t top = scales.bits == 16 ? 0x7bffu : 255u;  // the largest finite code
                std::uint32_t best = scale_codes[r];
                double best_value = parabola(s);
                for (const std::uint32_t c : {centre - 1, centre, centre + 1}) {
                    if (c < 1 || c > top) continue;
                    const double value = parabola(scales.decode(c));
                    if (value < best_value) {
                        best_value = value;
                        best = c;
                    }
                }
                if (best == scale_codes[r]) continue;
                const double step = scales.decode(best) - s;
                // e moves by -step v (up to the decoder's float rounding), eH by -step vH.
                eh.row(i) -= (step / s) * (xh.row(i) - eh.row(i));
                scale_codes[r] = best;
                stored[r] = scales.decode(best);
                set_error_row(r);
            }
        };

        std::vector<double> scratch(pvq_search_scratch_size(layout.group_dim)), mx, my;
        std::vector<float> t(layout.group_dim);
        std::vector<int> cand(3 * layout.group_dim), best(layout.group_dim);
        row_major_matrix delta;
        Eigen::VectorXd b, eg, en, uvec, mu, shift, me;
        for (int pass = 0; pass < passes; ++pass) {
            refit_scales();
            bool changed_any = false;
            for (std::size_t g0 = 0; g0 < groups; g0 += block_groups) {
                const std::size_t g1 = std::min(groups, g0 + block_groups);
                const auto b0 = static_cast<Eigen::Index>(info[g0].first);
                const auto b1 = static_cast<Eigen::Index>(g1 < groups ? info[g1].first : cols);
                delta.setZero(nr, b1 - b0);  // this block's change of e
                bool changed_block = false;
                for (std::size_t j = g0; j < g1; ++j) {
                    const group_metric& g = info[j];
                    const auto f = static_cast<Eigen::Index>(g.first), d = static_cast<Eigen::Index>(g.dim);
                    bool changed = false;
                    for (std::size_t r = r0; r < r1; ++r) {
                        const double s = stored[r];
                        if (!(s > 0.0)) continue;
                        const auto i = static_cast<Eigen::Index>(r - r0);
                        eg = e.row(i).segment(f, d).transpose();
                        me.noalias() = g.m * eg;
                        b = eh.row(i).segment(f, d).transpose() - me;
                        const double current = eg.dot(me) + 2.0 * eg.dot(b);
                        shift = b;
                        g.llt.solveInPlace(shift);
                        for (Eigen::Index k = 0; k < d; ++k)
                            t[static_cast<std::size_t>(k)] = static_cast<float>(x(i, f + k) + shift(k));
                        int* y = points.data() + r * cols + g.first;
                        int* c0 = cand.data();
                        std::copy_n(y, g.dim, c0);
                        std::copy_n(y, g.dim, c0 + g.dim);
                        refine_full_metric(t.data(), g.m, c0 + g.dim, g.dim, mx, my);
                        pvq_search_dispatch(t.data(), g.weights.data(), g.dim, g.pulses, c0 + 2 * g.dim, search,
                                            scratch.data());
                        refine_full_metric(t.data(), g.m, c0 + 2 * g.dim, g.dim, mx, my);
                        double best_loss = current;
                        std::uint32_t best_code = 0;
                        bool found = false;
                        for (std::size_t c = 0; c < 3; ++c) {
                            const int* yc = c0 + c * g.dim;
                            const double norm = std::sqrt(static_cast<double>(pulse_energy(yc, g.dim)));
                            uvec.resize(d);
                            for (Eigen::Index k = 0; k < d; ++k) uvec(k) = yc[k] / norm;
                            mu.noalias() = g.m * uvec;
                            double tm = 0.0;
                            for (Eigen::Index k = 0; k < d; ++k) tm += static_cast<double>(t[static_cast<std::size_t>(k)]) * mu(k);
                            const double uu = uvec.dot(mu);
                            const double gain = uu > 0.0 ? std::max(0.0, tm / uu) : 0.0;
                            const std::uint32_t code = format.gain_code(j, gain / s);
                            decode_group(yc, j, code, s);
                            en.resize(d);
                            for (Eigen::Index k = 0; k < d; ++k) en(k) = x(i, f + k) - v[static_cast<std::size_t>(k)];
                            me.noalias() = g.m * en;
                            const double loss = en.dot(me) + 2.0 * en.dot(b);
                            if (loss < best_loss) {
                                best_loss = loss;
                                best_code = code;
                                std::copy_n(yc, g.dim, best.data());
                                found = true;
                            }
                        }
                        if (!found) continue;
                        std::copy_n(best.data(), g.dim, y);
                        codes[r * groups + j] = best_code;
                        decode_group(y, j, best_code, s);
                        for (Eigen::Index k = 0; k < d; ++k) {
                            const double updated = x(i, f + k) - v[static_cast<std::size_t>(k)];
                            delta(i, f - b0 + k) += updated - e(i, f + k);
                            e(i, f + k) = updated;
                        }
                        changed = true;
                    }
                    if (!changed) continue;
                    changed_block = true;
                    // eH inside the block follows each group's change at once.
                    eh.middleCols(b0, b1 - b0).noalias() +=
                        delta.middleCols(f - b0, d) * hw.block(f, b0, d, b1 - b0);
                }
                if (!changed_block) continue;
                changed_any = true;
                // The rest of the row gets the block's change in one product each side.
                if (b0 > 0) eh.leftCols(b0).noalias() += delta * hw.block(b0, 0, b1 - b0, b0);
                if (b1 < c_count)
                    eh.rightCols(c_count - b1).noalias() += delta * hw.block(b0, b1, b1 - b0, c_count - b1);
            }
            if (!changed_any) break;
        }
    };
    parallel_slices(rows, threads, run_rows);
}

// The blocked search on rows already rotated: wf rows x cols floats (the
// format's layout), u the factor and hw the Hessian for that basis. Returns
// the packed payload words, written through the format's row writer.
template <class Format>
std::vector<std::uint64_t> gptq_encode(const std::vector<float>& wf, const Eigen::MatrixXd& u,
                                       const row_major_matrix& hw, const Format& format, const search_options& search,
                                       const gptq_options& options, const gptq_hooks& hooks = {}) {
    const matrix_layout& layout = format.layout();
    const std::size_t rows = layout.rows, cols = layout.cols;
    const row_scale_codec& scales = format.scales();
    const mse_row_encoder<Format> encoder(format, search);
    const auto r_count = static_cast<Eigen::Index>(rows), c_count = static_cast<Eigen::Index>(cols);
    row_major_matrix work =
        Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(wf.data(), r_count,
                                                                                               c_count)
            .cast<double>();
    const std::size_t groups = layout.groups_per_row();
    std::vector<gptq_group> group_info;
    group_info.reserve(groups);
    for (std::size_t j = 0; j < groups; ++j) {
        const bool full = j < layout.full_groups;
        group_info.push_back(make_gptq_group(u, j * layout.group_dim, full ? layout.group_dim : layout.tail_dim,
                                                     full ? layout.pulses : layout.tail_pulses));
    }
    const std::size_t block_groups = std::max<std::size_t>(1, options.block_columns / layout.group_dim);

    std::vector<std::uint32_t> scale_codes(rows), codes(rows * groups);
    std::vector<int> points(rows * cols);
    std::vector<double> row_loss(rows);
    const unsigned threads = hooks.on_block ? 1u : options.threads;
    double scale_factor = 1.0;
    const row_major_matrix original = options.row_scale_factors.size() > 1 ? work : row_major_matrix();

    // Rows [r0, r1): everything below is independent across rows.
    const auto run_rows = [&](std::size_t r0, std::size_t r1) {
        if (r1 <= r0) return;
        const auto nr = static_cast<Eigen::Index>(r1 - r0);
        std::vector<double> scratch(detail::pvq_search_scratch_size(layout.group_dim));
        std::vector<double> stored(r1 - r0);
        for (std::size_t r = r0; r < r1; ++r) {
            scale_codes[r] = encoder.row_scale_code(wf.data() + r * cols, r);
            if (scale_factor != 1.0) scale_codes[r] = scales.encode(scales.decode(scale_codes[r]) * scale_factor);
            stored[r - r0] = scales.decode(scale_codes[r]);
            row_loss[r] = 0.0;
        }
        auto rows_view = work.middleRows(static_cast<Eigen::Index>(r0), nr);
        std::vector<float> x(layout.group_dim);
        std::vector<double> mx, my;
        std::vector<int> other;
        detail::row_major_matrix xg, ug, a, b, e, err;
        for (std::size_t g0 = 0; g0 < groups; g0 += block_groups) {
            const std::size_t g1 = std::min(groups, g0 + block_groups);
            const std::size_t b0 = group_info[g0].first;
            const std::size_t b1 = g1 < groups ? group_info[g1].first : cols;
            const auto bw = static_cast<Eigen::Index>(b1 - b0);
            err.setZero(nr, bw);
            for (std::size_t j = g0; j < g1; ++j) {
                const detail::gptq_group& g = group_info[j];
                const auto f = static_cast<Eigen::Index>(g.first), d = static_cast<Eigen::Index>(g.dim);
                xg = rows_view.middleCols(f, d);
                ug.resize(nr, d);
                for (std::size_t r = r0; r < r1; ++r) {
                    const auto i = static_cast<Eigen::Index>(r - r0);
                    for (Eigen::Index k = 0; k < d; ++k) x[static_cast<std::size_t>(k)] = static_cast<float>(xg(i, k));
                    int* y = points.data() + r * cols + g.first;
                    detail::pvq_search_dispatch(x.data(), g.weights.data(), g.dim, g.pulses, y, search,
                                                scratch.data());
                    if (!g.diagonal && options.full_metric_search) {
                        // Two starts, the diagonal-metric point and the plain (Euclidean) one,
                        // each refined under the full metric; the better one is kept.
                        const double first = detail::refine_full_metric(x.data(), g.m, y, g.dim, mx, my);
                        other.resize(g.dim);
                        detail::pvq_search_dispatch(x.data(), nullptr, g.dim, g.pulses, other.data(), search,
                                                    scratch.data());
                        if (detail::refine_full_metric(x.data(), g.m, other.data(), g.dim, mx, my) > first)
                            std::copy(other.begin(), other.end(), y);
                    }
                    const double norm = std::sqrt(static_cast<double>(detail::pulse_energy(y, g.dim)));
                    for (Eigen::Index k = 0; k < d; ++k) ug(i, k) = y[k] / norm;
                }
                if (!g.plain) {
                    if (options.full_metric_gain) {
                        a.noalias() = xg * g.t.triangularView<Eigen::Upper>();
                        b.noalias() = ug * g.t.triangularView<Eigen::Upper>();
                    } else {
                        const Eigen::VectorXd diag = g.t.diagonal();
                        a = xg * diag.asDiagonal();
                        b = ug * diag.asDiagonal();
                    }
                }
                e.resize(nr, d);
                for (std::size_t r = r0; r < r1; ++r) {
                    const auto i = static_cast<Eigen::Index>(r - r0);
                    const int* y = points.data() + r * cols + g.first;
                    double gain;
                    if (g.plain) {
                        for (Eigen::Index k = 0; k < d; ++k)
                            x[static_cast<std::size_t>(k)] = static_cast<float>(xg(i, k));
                        gain = detail::optimal_gain(x.data(), y, g.dim);
                    } else {
                        const double bb = b.row(i).squaredNorm();
                        gain = bb > 0.0 ? std::max(0.0, a.row(i).dot(b.row(i)) / bb) : 0.0;
                    }
                    const double s = stored[r - r0];
                    const std::uint32_t code = s > 0.0 ? format.gain_code(j, gain / s) : 0;
                    codes[r * groups + j] = code;
                    // Exactly what decode_row computes.
                    const float factor = format.factor(s, j, format.gain_level(j, code), y);
                    for (Eigen::Index k = 0; k < d; ++k) {
                        const double value = static_cast<double>(static_cast<float>(y[k]) * factor);
                        e(i, k) = xg(i, k) - value;
                        rows_view(i, f + k) = value;
                    }
                }
                auto err_g = err.middleCols(f - static_cast<Eigen::Index>(b0), d);
                if (g.plain) err_g = e / u(f, f);  // T = I / U_ii
                else err_g.noalias() = e * g.t.triangularView<Eigen::Upper>();
                for (Eigen::Index i = 0; i < nr; ++i) row_loss[r0 + static_cast<std::size_t>(i)] += err_g.row(i).squaredNorm();
                const auto rest = static_cast<Eigen::Index>(b1) - (f + d);
                if (rest > 0)
                    rows_view.middleCols(f + d, rest).noalias() -= err_g * u.block(f, f + d, d, rest);
            }
            const auto tail = static_cast<Eigen::Index>(cols - b1);
            if (tail > 0)
                rows_view.rightCols(tail).noalias() -=
                    err * u.block(static_cast<Eigen::Index>(b0), static_cast<Eigen::Index>(b1), bw, tail);
            if (hooks.on_block) hooks.on_block(b0, b1, std::span<const double>(work.data(), rows * cols));
        }
    };
    // Each row scale factor is a complete pass; every row keeps the pass with its smallest
    // loss sum_groups ||err||^2 (rows are independent given H, so this is exact per row).
    std::vector<std::uint32_t> best_scale_codes, best_codes;
    std::vector<int> best_points;
    std::vector<double> best_loss;
    for (std::size_t f = 0; f < std::max<std::size_t>(1, options.row_scale_factors.size()); ++f) {
        scale_factor = options.row_scale_factors.empty() ? 1.0 : options.row_scale_factors[f];
        if (f > 0) work = original;
        parallel_slices(rows, threads, run_rows);
        if (f == 0) {
            best_scale_codes = scale_codes;
            best_codes = codes;
            best_points = points;
            best_loss = row_loss;
            continue;
        }
        for (std::size_t r = 0; r < rows; ++r) {
            if (!(row_loss[r] < best_loss[r])) continue;
            best_loss[r] = row_loss[r];
            best_scale_codes[r] = scale_codes[r];
            std::copy_n(codes.data() + r * groups, groups, best_codes.data() + r * groups);
            std::copy_n(points.data() + r * cols, cols, best_points.data() + r * cols);
        }
    }
    scale_codes = std::move(best_scale_codes);
    codes = std::move(best_codes);
    points = std::move(best_points);
    // With H = c I the loss is the plain squared error and the codes are the plain encoder's.
    if (!is_scaled_identity(std::span<const double>(hw.data(), cols * cols), cols))
        refine_groups(wf, rows, cols, hw, layout, format, search, scales, scale_codes, points, codes,
                      options.refine_passes, options.block_columns, threads);

    bit_writer out;
    for (std::size_t r = 0; r < rows; ++r)
        format.write_row(scale_codes[r], points.data() + r * cols, codes.data() + r * groups, out);
    return std::move(out).take();
}

}  // namespace detail

// The Hessian-weighted search (MatrixSearch, concepts.hpp): the blocked
// GPTQ-style search above minimising the proxy loss tr(dW H dW^T), for
// quantize_with. h: cols x cols row-major, symmetric positive definite (damp
// it first: hessian_accumulator::damped_hessian or damp_hessian); it must
// outlive the search. Throws svq::invalid_argument for a Hessian of the wrong
// size, with a non-finite entry, or not positive definite.
struct hessian_search {
    std::span<const double> h;
    gptq_options options{};

    template <class Format>
    std::vector<std::uint64_t> encode(const Format& format, std::span<const float> w, const matrix_config& config) const {
        return encode(format, w, config, detail::gptq_hooks{});
    }
    template <class Format>
    std::vector<std::uint64_t> encode(const Format& format, std::span<const float> w, const matrix_config& config,
                                      const detail::gptq_hooks& hooks) const {
        const std::size_t rows = format.layout().rows, cols = format.layout().cols;
        detail::check_hessian_shape(h, cols, "quantize (Hessian)");
        std::optional<hadamard_rotation> rotation;
        if (config.rotate) rotation.emplace(cols, config.seed);
        std::vector<float> wf(w.begin(), w.end());
        if (rotation) rotation->forward_rows(wf, rows);
        const detail::working_metric m = detail::make_working_metric(h, cols, rotation, "quantize (Hessian)");
        return detail::gptq_encode(wf, m.u, m.h, format, config.search, options, hooks);
    }
};

namespace detail {
// hessian_search with the tests' hooks.
struct hooked_hessian_search {
    hessian_search search;
    gptq_hooks hooks;
    template <class Format>
    std::vector<std::uint64_t> encode(const Format& format, std::span<const float> w, const matrix_config& config) const {
        return search.encode(format, w, config, hooks);
    }
};
}  // namespace detail

// The candidate configuration (candidate_configs: the largest K for each N,
// gain width and row scale width at <= target_bpw) whose Hessian quantization
// of sample rows has the smallest proxy loss. Unlike choose_config (plain
// SQNR), this sees that feedback favours small groups: on correlated
// activations N = 8..16 wins where the plain criterion picks N = 128.
// Row scale widths too narrow for some row are not tried (as in choose_config).
// Throws as choose_config and as the Hessian quantize.
inline config_candidate choose_config(std::span<const float> w, std::size_t rows, std::size_t cols,
                                      std::span<const double> h, double target_bpw,
                                      const auto_config_options& choice = {}, const gptq_options& options = {}) {
    const float peak = detail::check_matrix(w, rows, cols, "choose_config (Hessian)");
    detail::check_hessian_shape(h, cols, "choose_config (Hessian)");
    auto_config_options opt = choice;
    opt.row_scale_bits =
        detail::usable_row_scale_bits(w, rows, cols, choice.row_scale_bits, "choose_config (Hessian)");
    std::vector<config_candidate> candidates = candidate_configs(rows, cols, target_bpw, opt);
    if (candidates.empty()) return choose_config(w, rows, cols, target_bpw, opt);  // throws the plain message
    const std::size_t sample = opt.sample_count(rows, cols);
    std::vector<float> x(sample * cols);
    for (std::size_t i = 0; i < sample; ++i) std::copy_n(w.data() + (i * rows / sample) * cols, cols, x.data() + i * cols);
    // Magnitudes where float sums overflow are judged divided by a power of
    // two (detail::prescale_exponent): the proxy losses scale alike.
    if (const int shift = detail::prescale_exponent(peak); shift != 0) x = detail::prescaled(x, shift);
    const float ref = detail::reference_scale(x, sample, cols);
    // Sample rows in each basis tried and the factor for it.
    struct basis {
        bool rotate;
        std::vector<float> rows;
        detail::working_metric m;
    };
    std::vector<basis> bases;
    for (const bool rotate : {opt.rotate, !opt.rotate}) {
        if (rotate != opt.rotate && !options.try_both_rotations) continue;
        std::optional<hadamard_rotation> rotation;
        if (rotate) rotation.emplace(cols, opt.seed);
        std::vector<float> xf = x;
        if (rotation) rotation->forward_rows(xf, sample);
        bases.push_back({rotate, std::move(xf), detail::make_working_metric(h, cols, rotation, "choose_config (Hessian)")});
    }
    if (bases.size() == 2) {  // the same candidates with the rotation the other way (its seed costs 64 bits or saves them)
        auto_config_options other = opt;
        other.rotate = !opt.rotate;
        const std::vector<config_candidate> more = candidate_configs(rows, cols, target_bpw, other);
        candidates.insert(candidates.end(), more.begin(), more.end());
    }
    gptq_options sample_options = options;
    sample_options.refine_passes = 0;  // ranks the candidates; the refinement lowers them alike
    // Within one (N, row scale bits) series (gain bits ascending) the scan stops two steps past the best.
    struct series {
        std::size_t n = 0;
        unsigned scale_bits = 0;
        bool rotate = false;
        double best = std::numeric_limits<double>::infinity();
        int past_best = 0;
    };
    std::vector<series> seen;
    config_candidate best = candidates.front();
    double best_loss = std::numeric_limits<double>::infinity();
    for (config_candidate& c : candidates) {
        auto it = std::find_if(seen.begin(), seen.end(), [&](const series& s) {
            return s.n == c.config.group_dim && s.scale_bits == c.config.row_scale_bits && s.rotate == c.config.rotate;
        });
        if (it == seen.end())
            it = seen.insert(seen.end(), series{c.config.group_dim, c.config.row_scale_bits, c.config.rotate});
        if (it->past_best >= 2) continue;
        const basis& b = c.config.rotate == bases.front().rotate ? bases.front() : bases.back();
        auto format = std::make_shared<const row_format>(make_layout(sample, cols, c.config), ref);
        const quantized_matrix q(format, c.config,
                                 detail::gptq_encode(b.rows, b.m.u, b.m.h, *format, c.config.search, sample_options));
        const double loss = proxy_loss(x, q.dequantize(), sample, cols, h);
        c.predicted_sqnr_db = std::numeric_limits<double>::quiet_NaN();  // not measured here
        if (loss < it->best) {
            it->best = loss;
            it->past_best = 0;
        } else {
            ++it->past_best;
        }
        if (loss < best_loss) {
            best_loss = loss;
            best = c;
        }
    }
    return best;
}

// GPTQ with round-to-nearest int-b groups (the baseline), returned as an rtn_matrix
// (absmax int-b per group of config.group with an fp16 scale), codes chosen
// column by column with the same error feedback. Each group's scale comes from
// its current values (after the feedback so far) when its first column is reached.
// Throws svq::invalid_argument for a bad shape, weight, configuration or Hessian.
namespace detail {
inline rtn_matrix gptq_rtn_quantize(std::span<const float> w, std::size_t rows, std::size_t cols,
                                    std::span<const double> h, const rtn_config& config, const gptq_options& options,
                                    const gptq_hooks& hooks);
}  // namespace detail
inline rtn_matrix gptq_rtn_quantize(std::span<const float> w, std::size_t rows, std::size_t cols,
                                    std::span<const double> h, const rtn_config& config,
                                    const gptq_options& options = {}) {
    return detail::gptq_rtn_quantize(w, rows, cols, h, config, options, {});
}

inline rtn_matrix detail::gptq_rtn_quantize(std::span<const float> w, std::size_t rows, std::size_t cols,
                                            std::span<const double> h, const rtn_config& config,
                                            const gptq_options& options, const gptq_hooks& hooks) {
    detail::check_rtn_config(config);
    detail::check_matrix(w, rows, cols, "gptq_rtn_quantize");
    detail::check_hessian_shape(h, cols, "gptq_rtn_quantize");
    // Row-major: the column loop reads rows of U.
    const detail::row_major_matrix u = detail::inverse_hessian_factor(h, cols, "gptq_rtn_quantize");
    const std::size_t groups = (cols + config.group - 1) / config.group;
    std::vector<std::int8_t> codes(rows * cols);
    std::vector<std::uint16_t> scales(rows * groups);
    const std::size_t block = std::max<std::size_t>(1, options.block_columns / config.group) * config.group;
    const auto r_count = static_cast<Eigen::Index>(rows), c_count = static_cast<Eigen::Index>(cols);
    detail::row_major_matrix work =
        Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(w.data(), r_count,
                                                                                               c_count)
            .cast<double>();
    const unsigned threads = hooks.on_block ? 1u : options.threads;

    const auto run_rows = [&](std::size_t r0, std::size_t r1) {
        if (r1 <= r0) return;
        const auto nr = static_cast<Eigen::Index>(r1 - r0);
        auto rows_view = work.middleRows(static_cast<Eigen::Index>(r0), nr);
        detail::row_major_matrix err;
        std::vector<float> group_values(config.group);
        for (std::size_t b0 = 0; b0 < cols; b0 += block) {
            const std::size_t b1 = std::min(cols, b0 + block);
            const auto bw = static_cast<Eigen::Index>(b1 - b0);
            err.setZero(nr, bw);
            for (std::size_t r = r0; r < r1; ++r) {
                const auto i = static_cast<Eigen::Index>(r - r0);
                float d = 0.0f;
                for (std::size_t c = b0; c < b1; ++c) {
                    const auto cc = static_cast<Eigen::Index>(c);
                    if (c % config.group == 0) {
                        const std::size_t n = std::min(config.group, cols - c);
                        for (std::size_t k = 0; k < n; ++k)
                            group_values[k] = static_cast<float>(rows_view(i, cc + static_cast<Eigen::Index>(k)));
                        d = rtn_group_scale(std::span<const float>(group_values.data(), n), config.bits);
                        scales[r * groups + c / config.group] = float_to_half(d);
                    }
                    const double current = rows_view(i, cc);
                    const int code = rtn_round(static_cast<float>(current), d, config.bits);
                    codes[r * cols + c] = static_cast<std::int8_t>(code);
                    const double value = static_cast<double>(static_cast<float>(code) * d);
                    const double e = (current - value) / u(cc, cc);
                    err(i, cc - static_cast<Eigen::Index>(b0)) = e;
                    rows_view(i, cc) = value;
                    const auto rest = static_cast<Eigen::Index>(b1 - c - 1);
                    if (rest > 0) rows_view.row(i).segment(cc + 1, rest) -= e * u.row(cc).segment(cc + 1, rest);
                }
            }
            const auto tail = static_cast<Eigen::Index>(cols - b1);
            if (tail > 0)
                rows_view.rightCols(tail).noalias() -=
                    err * u.block(static_cast<Eigen::Index>(b0), static_cast<Eigen::Index>(b1), bw, tail);
            if (hooks.on_block) hooks.on_block(b0, b1, std::span<const double>(work.data(), rows * cols));
        }
    };
    detail::parallel_slices(rows, threads, run_rows);
    return rtn_matrix(rows, cols, config, std::move(codes), std::move(scales));
}

}  // namespace svq
