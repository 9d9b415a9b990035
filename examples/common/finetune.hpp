// pvq-tuned: quantization-aware fine-tuning of a Hessian PVQ model against
// the float model's next-token distributions (docs/evaluation.md, "pvq-tuned").
//
// Start: pvq-hessian-mix-seq (per-matrix configurations by measured
// sensitivity, sequential drift-corrected Hessian encoding). Then, for
// `steps` steps on batches of the calibration set (never the evaluation sets):
//   1. the model with the current quantized matrices runs forward and back
//      (llama2_grad.hpp) for the loss mean KL(float || model);
//   2. each matrix keeps latent float weights L (at first its decoded
//      Hessian PVQ weights); the gradient with respect to the decoded weights
//      updates L (the straight-through estimate), by Adam with a step of
//      weight_lr times the matrix's RMS, cosine-decayed;
//   3. every matrix is encoded again from L in its own format (svq::requantize:
//      same configuration, reference and row scales, so the same stored bits;
//      new points and gain codes; keep_row_scales = false: svq::quantize with
//      the same configuration, row scales re-planned, still the same bits);
//   4. the RMSNorm weights (float parameters of every row of the table, not
//      stored bits) take an Adam step too (norm_lr).
// Every check_every steps the loss on the last `holdout` calibration
// sequences (not trained on) is measured, and the best state is kept, the
// starting one included, so tuning never returns a model worse on it than
// where it started.
#pragma once

#include <common/llama2.hpp>
#include <common/llama2_grad.hpp>
#include <common/model_eval.hpp>

#include <svq/error.hpp>
#include <svq/matrix/quantized_matrix.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstddef>
#include <memory>
#include <numbers>
#include <span>
#include <string>
#include <vector>

namespace svq::model_eval {

struct tune_options {
    std::size_t steps = 600;
    std::size_t batch = 16;        // calibration sequences per step
    std::size_t holdout = 8;       // last calibration sequences: the loss that picks the kept state
    std::size_t check_every = 25;  // steps between holdout checks
    double weight_lr = 5e-3;       // Adam step of the latent weights, in units of each matrix's RMS
    double norm_lr = 2e-3;         // Adam step of the norm weights, in units of each norm's mean |value|
    bool tune_norms = true;
    bool tune_embedding = false;  // also the float token embedding (= classifier), as a norm
    bool keep_row_scales = true;  // false: every step re-plans the row scales from the latent weights too
};

// What tuning did, for the report and the tests.
struct tune_report {
    double start_holdout = 0.0, best_holdout = 0.0;  // holdout loss (mean KL) before and at the kept step
    std::size_t best_step = 0;                       // 0: the starting state was kept
    std::vector<double> holdout_curve;               // the holdout loss at each check
};

namespace detail {

// Adam (Kingma and Ba) on one tensor.
class adam {
public:
    explicit adam(std::size_t n) : m_(n, 0.0), v_(n, 0.0) {}
    // x -= step * mhat / (sqrt(vhat) + eps); t counts from 1.
    void update(std::span<float> x, std::span<const float> g, double step, std::size_t t) {
        constexpr double b1 = 0.9, b2 = 0.999, eps = 1e-12;
        const double c1 = 1.0 - std::pow(b1, static_cast<double>(t));
        const double c2 = 1.0 - std::pow(b2, static_cast<double>(t));
        for (std::size_t i = 0; i < x.size(); ++i) {
            const double gi = g[i];
            m_[i] = b1 * m_[i] + (1.0 - b1) * gi;
            v_[i] = b2 * v_[i] + (1.0 - b2) * gi * gi;
            const double mhat = m_[i] / c1, vhat = v_[i] / c2;
            x[i] = static_cast<float>(x[i] - step * mhat / (std::sqrt(vhat) + eps));
        }
    }

private:
    std::vector<double> m_, v_;
};

inline double rms_of(std::span<const float> w) {
    double e = 0.0;
    for (const float v : w) e += static_cast<double>(v) * v;
    return w.empty() ? 0.0 : std::sqrt(e / static_cast<double>(w.size()));
}

inline double mean_abs(std::span<const float> w) {
    double e = 0.0;
    for (const float v : w) e += std::abs(static_cast<double>(v));
    return w.empty() ? 0.0 : e / static_cast<double>(w.size());
}

}  // namespace detail

// Tunes `start` (one stored matrix per problem, in ps order; the problems are
// the model's linears, and the token embedding when quantized) against the
// float model on the calibration set. Returns the solution (same configs and
// bits as start, new points and gain codes, re-fitted norms) and fills report.
[[nodiscard]] inline model_solution tune_pvq(std::span<const layer_problem> ps,
                                             const std::vector<std::shared_ptr<const quantized_matrix>>& start,
                                             const calibration_context& ctx, const tune_options& o,
                                             tune_report* report = nullptr) {
    if (ctx.float_model == nullptr || ctx.sequences == nullptr)
        throw invalid_argument("pvq-tuned needs the float model and the calibration set");
    if (start.size() != ps.size())
        throw invalid_argument(fmt::format("pvq-tuned: {} stored matrices for {} problems", start.size(), ps.size()));
    const std::vector<std::vector<int>>& calibration = *ctx.sequences;
    if (o.batch == 0 || o.holdout == 0 || o.check_every == 0 || calibration.size() < o.holdout + o.batch)
        throw invalid_argument(fmt::format("pvq-tuned: {} calibration sequences, need holdout {} + batch {} (both >= 1)",
                                           calibration.size(), o.holdout, o.batch));
    const llama2::model& float_model = *ctx.float_model;
    llama2::model m = float_model;
    const std::vector<llama2::linear_ref> refs = m.linears();

    // Where each problem's matrix lives in the model; the embedding is the rest.
    std::vector<std::span<float>> slot(ps.size());
    std::vector<std::size_t> linear_of(ps.size(), refs.size());
    bool embedding = false;
    for (std::size_t i = 0; i < ps.size(); ++i) {
        for (const llama2::linear_ref& r : refs)
            if (r.name == ps[i].name) {
                slot[i] = r.weights;
                linear_of[i] = r.index;
            }
        if (linear_of[i] == refs.size()) {
            slot[i] = m.mutable_token_embedding();
            embedding = true;
        }
        if (start[i] == nullptr || start[i]->rows() * start[i]->cols() != slot[i].size())
            throw invalid_argument(fmt::format("pvq-tuned: no stored matrix of the shape of {}", ps[i].name));
    }

    std::vector<std::vector<float>> latent(ps.size());
    std::vector<std::shared_ptr<const quantized_matrix>> current = start;
    std::vector<double> step_scale(ps.size());
    std::vector<detail::adam> weight_adam;
    for (std::size_t i = 0; i < ps.size(); ++i) {
        latent[i] = start[i]->dequantize();
        std::copy(latent[i].begin(), latent[i].end(), slot[i].begin());
        step_scale[i] = detail::rms_of(latent[i]);
        weight_adam.emplace_back(latent[i].size());
    }
    const int layers = m.config().n_layers;
    std::vector<std::span<float>> norms;
    for (int l = 0; l < layers; ++l) {
        norms.push_back(m.mutable_rms_att(l));
        norms.push_back(m.mutable_rms_ffn(l));
    }
    norms.push_back(m.mutable_rms_final());
    const bool float_embedding = o.tune_embedding && !embedding;
    if (float_embedding) norms.push_back(m.mutable_token_embedding());
    std::vector<detail::adam> norm_adam;
    std::vector<double> norm_scale;
    for (const std::span<float> n : norms) {
        norm_adam.emplace_back(n.size());
        norm_scale.push_back(detail::mean_abs(n));
    }

    const std::size_t train = calibration.size() - o.holdout;
    const std::vector<std::vector<int>> holdout(calibration.begin() + static_cast<std::ptrdiff_t>(train),
                                                calibration.end());
    // The teacher of each batch is computed when it is used (a forward pass of
    // the float model): a large calibration set needs no table of them all.
    const llama2::teacher_distributions holdout_teacher = llama2::make_teacher(float_model, holdout, ctx.threads);

    struct state {
        std::vector<std::shared_ptr<const quantized_matrix>> matrices;
        std::vector<std::vector<float>> norms;
    };
    const auto snapshot = [&] {
        state s{current, {}};
        for (const std::span<float> n : norms) s.norms.emplace_back(n.begin(), n.end());
        return s;
    };
    tune_report rep;
    rep.start_holdout = llama2::kl_loss(m, holdout, holdout_teacher, ctx.threads);
    rep.best_holdout = rep.start_holdout;
    rep.holdout_curve.push_back(rep.start_holdout);
    state best = snapshot();

    const llama2::gradient_options gopt{ctx.threads, embedding || float_embedding};
    std::vector<std::vector<int>> batch(o.batch);
    for (std::size_t t = 1; t <= o.steps; ++t) {
        for (std::size_t b = 0; b < o.batch; ++b) batch[b] = calibration[((t - 1) * o.batch + b) % train];
        const llama2::teacher_distributions batch_teacher = llama2::make_teacher(float_model, batch, ctx.threads);
        const llama2::kl_gradient_result<float> g = llama2::kl_loss_gradients<float>(m, batch, batch_teacher, gopt);
        const double decay = 0.5 * (1.0 + std::cos(std::numbers::pi * static_cast<double>(t - 1) / static_cast<double>(o.steps)));
        for (std::size_t i = 0; i < ps.size(); ++i) {
            const std::vector<float>& grad =
                linear_of[i] < refs.size() ? g.gradients.linears[linear_of[i]] : g.gradients.token_embedding;
            weight_adam[i].update(latent[i], grad, o.weight_lr * step_scale[i] * decay, t);
        }
        if (o.tune_norms) {
            std::vector<const std::vector<float>*> ng;
            for (int l = 0; l < layers; ++l) {
                ng.push_back(&g.gradients.rms_att[static_cast<std::size_t>(l)]);
                ng.push_back(&g.gradients.rms_ffn[static_cast<std::size_t>(l)]);
            }
            ng.push_back(&g.gradients.rms_final);
            if (float_embedding) ng.push_back(&g.gradients.token_embedding);
            for (std::size_t k = 0; k < norms.size(); ++k)
                norm_adam[k].update(norms[k], *ng[k], o.norm_lr * norm_scale[k] * decay, t);
        }
        detail::parallel_for(ps.size(), ctx.threads, [&](std::size_t i) {
            const quantized_matrix& q = *current[i];
            current[i] = std::make_shared<const quantized_matrix>(
                o.keep_row_scales ? requantize(q, latent[i]) : quantize(latent[i], q.rows(), q.cols(), q.config()));
            current[i]->dequantize(slot[i]);
        });
        if (t % o.check_every == 0 || t == o.steps) {
            const double h = llama2::kl_loss(m, holdout, holdout_teacher, ctx.threads);
            rep.holdout_curve.push_back(h);
            if (h < rep.best_holdout) {
                rep.best_holdout = h;
                rep.best_step = t;
                best = snapshot();
            }
        }
    }

    model_solution out;
    for (std::size_t i = 0; i < ps.size(); ++i) {
        const quantized_matrix& q = *best.matrices[i];
        out.layers.push_back({q.dequantize(), q.stored_bits(), to_string(q.config()) + ", tuned"});
    }
    norm_weights n;
    for (int l = 0; l < layers; ++l) {
        n.rms_att.push_back(best.norms[static_cast<std::size_t>(2 * l)]);
        n.rms_ffn.push_back(best.norms[static_cast<std::size_t>(2 * l + 1)]);
    }
    n.rms_final = best.norms[static_cast<std::size_t>(2 * layers)];
    if (float_embedding) n.token_embedding = best.norms.back();
    out.norms = std::move(n);
    if (report != nullptr) *report = std::move(rep);
    return out;
}

// pvq-tuned: pvq-hessian-mix-seq, then tune_pvq. `mix` may be shared with the
// pvq-hessian-mix methods (one candidate cache for all).
[[nodiscard]] inline method pvq_tuned_method(std::shared_ptr<pvq_hessian_mix> mix, tune_options options = {},
                                             std::string name = "pvq-tuned") {
    return {std::move(name), nullptr, nullptr,
            [mix, options](std::span<const layer_problem> ps, double target, const calibration_context& ctx) {
                const mix_result start = mix->run(ps, target, ctx, true);
                tune_report report;
                model_solution tuned = tune_pvq(ps, start.matrices, ctx, options, &report);
                std::fprintf(stderr, "pvq-tuned at %.4g bpw: holdout KL %.5f -> %.5f (step %zu of %zu)\n", target,
                             report.start_holdout, report.best_holdout, report.best_step, options.steps);
                for (std::size_t i = 0; i < tuned.layers.size(); ++i)
                    if (tuned.layers[i].stored_bits != start.solution.layers[i].stored_bits)
                        throw invalid_argument(fmt::format("pvq-tuned: {} changed from {} to {} stored bits", ps[i].name,
                                                           start.solution.layers[i].stored_bits, tuned.layers[i].stored_bits));
                return tuned;
            }};
}

}  // namespace svq::model_eval
