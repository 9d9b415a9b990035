// pvq-tuned: quantization-aware fine-tuning of a Hessian PVQ model against
// the float model's next-token distributions (docs/evaluation.md, "pvq-tuned").
//
// Start: pvq-hessian-mix-seq (per-matrix configurations by measured
// sensitivity, sequential drift-corrected Hessian encoding). Then
// svq::tune_quantized (svq/model/finetune.hpp: latent weights, straight-through
// Adam steps, svq::requantize every step, best state kept) against this
// objective, for `steps` steps on batches of the calibration set (never the
// evaluation sets): the loss mean KL(float || model), its gradients from
// llama2_grad.hpp with respect to every quantized matrix and (the float
// parameters, not stored bits) the RMSNorm weights. Every check_every steps
// the loss on the last `holdout` calibration sequences (not trained on)
// picks the kept state.
#pragma once

#include <common/llama2.hpp>
#include <common/llama2_grad.hpp>
#include <common/model_eval.hpp>

#include <svq/error.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/model/finetune.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace svq::model_eval {

// The library's options (steps, check_every, weight_lr, parameter_lr for
// the norms, keep_row_scales) plus what this objective draws on.
struct tune_options : svq::tune_options {
    std::size_t batch = 16;       // calibration sequences per step
    std::size_t holdout = 8;      // last calibration sequences: the loss that picks the kept state
    bool tune_norms = true;       // the RMSNorm weights are the float parameters
    bool tune_embedding = false;  // also the float token embedding (= classifier), as a norm
};

// What tuning did, for the report and the tests.
struct tune_report {
    double start_holdout = 0.0, best_holdout = 0.0;  // holdout loss (mean KL) before and at the kept step
    std::size_t best_step = 0;                       // 0: the starting state was kept
    std::vector<double> holdout_curve;               // the holdout loss at each check
};

namespace detail {

// svq::TuningObjective over llama2: the quantized matrices are the problems'
// (linears by name, else the token embedding); the float parameters are
// rms_att and rms_ffn of every layer, rms_final, then the float token
// embedding when it is tuned as a norm; none when norms are not tuned.
class kl_objective {
public:
    kl_objective(const llama2::model& float_model, std::span<const layer_problem> ps,
                 const std::vector<std::vector<int>>& calibration, const tune_options& o, unsigned threads)
        : float_model_(float_model), m_(float_model), calibration_(calibration), o_(o), threads_(threads),
          train_(calibration.size() - o.holdout),
          holdout_(calibration.begin() + static_cast<std::ptrdiff_t>(calibration.size() - o.holdout), calibration.end()) {
        const std::vector<llama2::linear_ref> refs = m_.linears();
        linears_ = refs.size();
        linear_of_ = linear_indices(m_, ps);
        for (std::size_t i = 0; i < ps.size(); ++i) {
            slot_.push_back(linear_of_[i] < linears_ ? refs[linear_of_[i]].weights : m_.mutable_token_embedding());
            embedding_ = embedding_ || linear_of_[i] == linears_;
        }
        float_embedding_ = o.tune_embedding && !embedding_;
        if (o.tune_norms) {
            for (int l = 0; l < m_.config().n_layers; ++l) {
                norms_.push_back(m_.mutable_rms_att(l));
                norms_.push_back(m_.mutable_rms_ffn(l));
            }
            norms_.push_back(m_.mutable_rms_final());
            if (float_embedding_) norms_.push_back(m_.mutable_token_embedding());
        }
        // The teacher of each batch is computed when it is used (a forward pass of
        // the float model): a large calibration set needs no table of them all.
        holdout_teacher_ = llama2::make_teacher(float_model_, holdout_, threads_);
    }
    kl_objective(const kl_objective&) = delete;  // slots point into m_
    kl_objective& operator=(const kl_objective&) = delete;

    [[nodiscard]] std::span<float> slot(std::size_t i) const { return slot_[i]; }
    [[nodiscard]] bool float_embedding() const noexcept { return float_embedding_; }

    // The float parameters' starting values.
    [[nodiscard]] std::vector<std::vector<float>> parameters() const {
        std::vector<std::vector<float>> out;
        for (const std::span<float> n : norms_) out.emplace_back(n.begin(), n.end());
        return out;
    }

    svq::tune_gradient gradient(std::size_t t, std::span<const std::vector<float>> weights,
                                std::span<const std::vector<float>> parameters) {
        set(weights, parameters);
        std::vector<std::vector<int>> batch(o_.batch);
        for (std::size_t b = 0; b < o_.batch; ++b) batch[b] = calibration_[((t - 1) * o_.batch + b) % train_];
        const llama2::teacher_distributions batch_teacher = llama2::make_teacher(float_model_, batch, threads_);
        const llama2::gradient_options gopt{threads_, embedding_ || float_embedding_};
        llama2::kl_gradient_result<float> g = llama2::kl_loss_gradients<float>(m_, batch, batch_teacher, gopt);
        svq::tune_gradient out;
        for (const std::size_t linear : linear_of_)
            out.weights.push_back(linear < linears_ ? g.gradients.linears[linear] : g.gradients.token_embedding);
        if (o_.tune_norms) {
            for (std::size_t l = 0; l < g.gradients.rms_att.size(); ++l) {
                out.parameters.push_back(std::move(g.gradients.rms_att[l]));
                out.parameters.push_back(std::move(g.gradients.rms_ffn[l]));
            }
            out.parameters.push_back(std::move(g.gradients.rms_final));
            if (float_embedding_) out.parameters.push_back(std::move(g.gradients.token_embedding));
        }
        return out;
    }

    double holdout_loss(std::span<const std::vector<float>> weights, std::span<const std::vector<float>> parameters) {
        set(weights, parameters);
        return llama2::kl_loss(m_, holdout_, holdout_teacher_, threads_);
    }

private:
    void set(std::span<const std::vector<float>> weights, std::span<const std::vector<float>> parameters) {
        for (std::size_t i = 0; i < slot_.size(); ++i) std::copy(weights[i].begin(), weights[i].end(), slot_[i].begin());
        for (std::size_t k = 0; k < norms_.size(); ++k)
            std::copy(parameters[k].begin(), parameters[k].end(), norms_[k].begin());
    }

    const llama2::model& float_model_;
    llama2::model m_;  // the float model with the current matrices and norms
    const std::vector<std::vector<int>>& calibration_;
    tune_options o_;
    unsigned threads_ = 1;
    std::size_t train_ = 0;
    std::vector<std::vector<int>> holdout_;
    llama2::teacher_distributions holdout_teacher_;
    std::size_t linears_ = 0;
    std::vector<std::size_t> linear_of_;  // per problem; linears_: the embedding
    std::vector<std::span<float>> slot_;  // per problem, its matrix in m_
    std::vector<std::span<float>> norms_;
    bool embedding_ = false, float_embedding_ = false;
};

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
    detail::kl_objective objective(float_model, ps, calibration, o, ctx.threads);
    for (std::size_t i = 0; i < ps.size(); ++i)
        if (start[i] == nullptr || start[i]->rows() * start[i]->cols() != objective.slot(i).size())
            throw invalid_argument(fmt::format("pvq-tuned: no stored matrix of the shape of {}", ps[i].name));

    svq::tune_options library = o;
    library.threads = ctx.threads;
    const svq::tune_result r = svq::tune_quantized(start, objective.parameters(), objective, library);

    model_solution out;
    for (const std::shared_ptr<const quantized_matrix>& q : r.matrices)
        out.layers.push_back({q->dequantize(), q->stored_bits(), to_string(q->config()) + ", tuned"});
    // Norms not tuned are the float model's.
    const auto layers = static_cast<std::size_t>(float_model.config().n_layers);
    norm_weights n;
    for (std::size_t l = 0; l < layers; ++l) {
        const auto layer = static_cast<int>(l);
        n.rms_att.push_back(o.tune_norms ? r.parameters[2 * l] : float_model.layer(layer).rms_att);
        n.rms_ffn.push_back(o.tune_norms ? r.parameters[2 * l + 1] : float_model.layer(layer).rms_ffn);
    }
    n.rms_final = o.tune_norms ? r.parameters[2 * layers] : std::vector<float>(float_model.rms_final().begin(), float_model.rms_final().end());
    if (objective.float_embedding())
        n.token_embedding = o.tune_norms ? r.parameters.back() : std::vector<float>(float_model.token_embedding().begin(), float_model.token_embedding().end());
    out.norms = std::move(n);
    if (report != nullptr) *report = {r.start_loss, r.best_loss, r.best_step, r.loss_curve};
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
