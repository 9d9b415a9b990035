// Quantization-aware fine-tuning of stored matrices through a model-agnostic
// objective.
//
// Each matrix keeps latent float weights L (at first its decoded weights).
// For `steps` steps:
//   1. the objective, given the current decoded weights (and the float
//      parameters), returns the gradient of its training loss with respect
//      to each decoded matrix and each parameter;
//   2. that gradient updates L (the straight-through estimate: decoding is
//      treated as the identity), by Adam with a step of weight_lr times the
//      matrix's starting RMS, cosine-decayed over the steps;
//   3. every matrix is encoded again from L in its own format
//      (svq::requantize: same configuration, reference and row scales, so the
//      same stored bits; new points and gain codes; keep_row_scales = false:
//      svq::quantize with the same configuration, row scales re-planned,
//      still the same bits);
//   4. the float parameters (in a model: norm weights, never stored bits)
//      take an Adam step too, parameter_lr times their starting mean |value|.
// Every check_every steps (and after the last) the objective's held-out loss
// is measured, and the best state is kept, the starting one included, so
// tuning never returns a state worse on it than where it started.
#pragma once

#include <svq/error.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/model/parallel_for.hpp>

#include <fmt/format.h>

#include <cmath>
#include <concepts>
#include <cstddef>
#include <memory>
#include <numbers>
#include <span>
#include <vector>

namespace svq {

struct tune_options {
    std::size_t steps = 600;
    std::size_t check_every = 25;  // steps between held-out checks (>= 1)
    double weight_lr = 5e-3;       // Adam step of the latent weights, in units of each matrix's RMS
    double parameter_lr = 2e-3;    // Adam step of the float parameters, in units of each one's mean |value|
    bool keep_row_scales = true;   // false: every step re-plans the row scales from the latent weights too
    unsigned threads = 1;          // re-encoding runs one matrix per thread
};

// The objective's answer at one step.
struct tune_gradient {
    std::vector<std::vector<float>> weights;     // [matrix] d loss / d decoded weights, rows * cols row-major
    std::vector<std::vector<float>> parameters;  // [parameter] d loss / d parameter, same sizes as the parameters
};

// What tuning trains against. gradient(step, weights, parameters): the
// training loss's gradient at step (1-based, e.g. to pick the batch) with the
// model's matrices set to weights (decoded, one per stored matrix) and its
// float parameters to parameters. holdout_loss(weights, parameters): the
// loss that picks the kept state (data not trained on).
template <class O>
concept TuningObjective = requires(O& o, std::size_t step, std::span<const std::vector<float>> weights,
                                   std::span<const std::vector<float>> parameters) {
    { o.gradient(step, weights, parameters) } -> std::same_as<tune_gradient>;
    { o.holdout_loss(weights, parameters) } -> std::convertible_to<double>;
};

// The kept state and what tuning did.
struct tune_result {
    std::vector<std::shared_ptr<const quantized_matrix>> matrices;  // same configurations and bits as the start
    std::vector<std::vector<float>> parameters;
    double start_loss = 0.0, best_loss = 0.0;  // held-out loss before and at the kept step
    std::size_t best_step = 0;                 // 0: the starting state was kept
    std::vector<double> loss_curve;            // the held-out loss at each check, the start first
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

// Tunes the stored matrices `start` (and the float `parameters`, which may be
// none) against `objective`. Throws invalid_argument for a missing matrix,
// check_every = 0, a non-positive learning rate, or a gradient whose count or
// sizes do not match; the objective's own exceptions pass through.
template <TuningObjective Objective>
[[nodiscard]] tune_result tune_quantized(std::span<const std::shared_ptr<const quantized_matrix>> start,
                                         std::vector<std::vector<float>> parameters, Objective& objective,
                                         const tune_options& o) {
    if (o.check_every == 0) throw invalid_argument("tune_quantized: check_every must be >= 1, not 0");
    if (!(o.weight_lr > 0.0) || !(o.parameter_lr > 0.0) || !std::isfinite(o.weight_lr) ||
        !std::isfinite(o.parameter_lr))
        throw invalid_argument(fmt::format("tune_quantized: learning rates {} and {} must be finite and > 0",
                                           o.weight_lr, o.parameter_lr));
    const std::size_t n = start.size();
    for (std::size_t i = 0; i < n; ++i)
        if (start[i] == nullptr) throw invalid_argument(fmt::format("tune_quantized: stored matrix {} is null", i));

    std::vector<std::vector<float>> latent(n), weights(n);
    std::vector<std::shared_ptr<const quantized_matrix>> current(start.begin(), start.end());
    std::vector<double> step_scale(n);
    std::vector<detail::adam> weight_adam;
    for (std::size_t i = 0; i < n; ++i) {
        latent[i] = start[i]->dequantize();
        weights[i] = latent[i];
        step_scale[i] = detail::rms_of(latent[i]);
        weight_adam.emplace_back(latent[i].size());
    }
    std::vector<detail::adam> parameter_adam;
    std::vector<double> parameter_scale;
    for (const std::vector<float>& p : parameters) {
        parameter_adam.emplace_back(p.size());
        parameter_scale.push_back(detail::mean_abs(p));
    }

    using view = std::span<const std::vector<float>>;
    tune_result out;
    out.start_loss = static_cast<double>(objective.holdout_loss(view(weights), view(parameters)));
    out.best_loss = out.start_loss;
    out.loss_curve.push_back(out.start_loss);
    out.matrices = current;
    out.parameters = parameters;

    for (std::size_t t = 1; t <= o.steps; ++t) {
        const tune_gradient g = objective.gradient(t, view(weights), view(parameters));
        if (g.weights.size() != n || g.parameters.size() != parameters.size())
            throw invalid_argument(
                fmt::format("tune_quantized: step {} gave gradients of {} matrices and {} parameters, "
                            "not {} and {}",
                            t, g.weights.size(), g.parameters.size(), n, parameters.size()));
        for (std::size_t i = 0; i < n; ++i)
            if (g.weights[i].size() != latent[i].size())
                throw invalid_argument(
                    fmt::format("tune_quantized: step {} gave {} gradient values for matrix {} of {}", t,
                                g.weights[i].size(), i, latent[i].size()));
        for (std::size_t k = 0; k < parameters.size(); ++k)
            if (g.parameters[k].size() != parameters[k].size())
                throw invalid_argument(
                    fmt::format("tune_quantized: step {} gave {} gradient values for parameter {} of {}", t,
                                g.parameters[k].size(), k, parameters[k].size()));
        const double decay =
            0.5 * (1.0 + std::cos(std::numbers::pi * static_cast<double>(t - 1) / static_cast<double>(o.steps)));
        for (std::size_t i = 0; i < n; ++i)
            weight_adam[i].update(latent[i], g.weights[i], o.weight_lr * step_scale[i] * decay, t);
        for (std::size_t k = 0; k < parameters.size(); ++k)
            parameter_adam[k].update(parameters[k], g.parameters[k], o.parameter_lr * parameter_scale[k] * decay, t);
        detail::parallel_for(n, o.threads, [&](std::size_t i) {
            const quantized_matrix& q = *current[i];
            current[i] = std::make_shared<const quantized_matrix>(
                o.keep_row_scales ? requantize(q, latent[i]) : quantize(latent[i], q.rows(), q.cols(), q.config()));
            current[i]->dequantize(weights[i]);
        });
        if (t % o.check_every == 0 || t == o.steps) {
            const double h = static_cast<double>(objective.holdout_loss(view(weights), view(parameters)));
            out.loss_curve.push_back(h);
            if (h < out.best_loss) {
                out.best_loss = h;
                out.best_step = t;
                out.matrices = current;
                out.parameters = parameters;
            }
        }
    }
    return out;
}

}  // namespace svq
