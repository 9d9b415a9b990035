// Mixed precision across the matrices of a model, with Hessian PVQ.
//
// Every matrix gets Hessian PVQ candidates at several rates (target + each of
// hessian_mix_options::rate_offsets, configuration by choose_config). The
// model's loss is estimated as the sum over matrices of
//
//     s_i * proxy_i(candidate),   proxy_i(Wq) = tr((W - Wq) H (W - Wq)^T),
//     s_i = loss_i / proxy_i(target-rate candidate),
//
// where loss_i is the model's loss with matrix i alone replaced by its
// target-rate candidate. That loss is the one model-specific measurement, and
// the caller supplies it (IsolatedLossSource: e.g. the mean KL divergence of
// the next-token distributions from the float model's on calibration data).
// The per-matrix choice minimises the estimate subject to
// sum of stored bits <= floor(target * weights) (allocate_bits, with every
// matrix at the target rate as the fallback).
//
// An optional second pass (hessian_mix::sequential) keeps every chosen
// configuration (so the same bits) and encodes each matrix again, stage by
// stage in the order the model computes them, against the inputs X~ of the
// model with everything before already quantized: minimise
// |X W^T - X~ Wq^T|^2 + lambda |W - Wq|^2 (X the float model's inputs at the
// same positions), i.e. quantize W' = W (C + lambda I)(H~ + lambda I)^-1
// under H~ + lambda I, with H~ = X~^T X~ / n, C = X^T X~ / n and
// lambda = damping * mean(diag H~). The caller runs its model to collect
// H~ and C (DriftSource).
#pragma once

#include <svq/core/eigen.hpp>
#include <svq/error.hpp>
#include <svq/hessian/calibration.hpp>
#include <svq/hessian/gptq.hpp>
#include <svq/matrix/auto_config.hpp>
#include <svq/format/layout.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/model/allocate.hpp>
#include <svq/model/parallel_for.hpp>
#include <svq/quantize.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace svq {

// One weight matrix of a model, as the model-level methods see it. The spans
// are borrowed: they must outlive the call they are passed to.
struct matrix_problem {
    std::string_view name;            // for messages and reports: "layers.3.w2"
    std::size_t rows = 0, cols = 0;   // W is rows x cols, y = W x
    std::span<const float> weights;   // rows * cols, row-major
    std::span<const double> hessian;  // cols * cols row-major, SPD: the damped X^T X / n of the inputs
    unsigned threads = 1;             // threads a quantizer of this one matrix may use
};

struct hessian_mix_options {
    std::vector<double> rate_offsets = {-0.75, -0.5, -0.25, 0.0,
                                        0.25,  0.5,  0.75};  // candidate rates: target + each (> 0)
    bool drift_correction =
        true;  // sequential pass; false: quantize W itself under H~ + lambda I (GPTQ's sequential mode)
    auto_config_options config{};  // the configurations choose_config tries at each rate
    gptq_options gptq{};  // Hessian PVQ of every candidate (its threads are ignored: candidates run in parallel)
};

// H~ = X~^T X~ / n and C = X^T X~ / n of one matrix's inputs (cols x cols):
// X the float model's inputs, X~ those of the partly quantized model, at the
// same n positions.
struct drift_statistics {
    Eigen::MatrixXd h, c;
};

// The model's loss with matrix i (an index into the problems) alone replaced
// by `weights` (rows * cols, row-major), every other matrix as it was. Any
// finite, non-negative loss works; the estimate is linear in it.
template <class M>
concept IsolatedLossSource = requires(M& m, std::size_t i, std::span<const float> weights) {
    { m.isolated_loss(i, weights) } -> std::convertible_to<double>;
};

// The drift statistics of the inputs of matrices `members` (indices into the
// problems), in members' order, with the model's matrix j replaced by
// replaced[j] wherever that span is not empty (the float matrix elsewhere).
template <class M>
concept DriftSource = requires(M& m, std::span<const std::size_t> members,
                               std::span<const std::span<const float>> replaced) {
    { m.drift(members, replaced) } -> std::same_as<std::vector<drift_statistics>>;
};

// What the search chose, one entry per problem in problem order.
struct hessian_mix_result {
    std::vector<std::shared_ptr<const quantized_matrix>> matrices;  // the stored form
    std::vector<std::vector<float>> weights;                        // matrices[i]->dequantize()
    std::vector<matrix_config> configs;
    std::vector<double> rates;            // the candidate rate (bpw slot) each matrix got
    std::vector<double> sensitivity;      // s_i = loss_i / proxy_i
    std::vector<bool> re_encoded;         // encoded again by the sequential pass
    std::size_t budget_bits = 0;          // floor(target * weights)
    double estimated_loss = 0.0;          // sum of s_i proxy_i of the choice
    double uniform_estimated_loss = 0.0;  // the same with every matrix at the target rate

    // Every stored bit of every matrix (never above budget_bits).
    [[nodiscard]] std::size_t stored_bits() const {
        std::size_t sum = 0;
        for (const auto& m : matrices) sum += m->stored_bits();
        return sum;
    }
};

namespace detail {

// FNV-1a over raw bytes: keys the caches to the exact inputs.
inline std::uint64_t fingerprint(const void* data, std::size_t bytes,
                                 std::uint64_t h = 0xcbf29ce484222325ull) noexcept {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

// The fingerprint of a problem's weights, Hessian and shape.
inline std::uint64_t fingerprint(const matrix_problem& p) noexcept {
    std::uint64_t h = fingerprint(p.weights.data(), p.weights.size_bytes());
    h = fingerprint(p.hessian.data(), p.hessian.size_bytes(), h);
    h = fingerprint(&p.rows, sizeof p.rows, h);
    return fingerprint(&p.cols, sizeof p.cols, h);
}

struct mix_candidate {
    double rate = 0.0;
    std::vector<float> weights;
    std::size_t stored_bits = 0;
    matrix_config config;
    double proxy = 0.0;
    std::shared_ptr<const quantized_matrix> matrix;  // what weights decode from
};

inline void check_problem(const matrix_problem& p, const char* who) {
    if (p.rows == 0 || p.cols == 0 || p.weights.size() != p.rows * p.cols || p.hessian.size() != p.cols * p.cols)
        throw invalid_argument(fmt::format("{}: {} is {} x {} with {} weights and a Hessian of {} values", who, p.name,
                                           p.rows, p.cols, p.weights.size(), p.hessian.size()));
}

}  // namespace detail

// The search. Candidates (one Hessian PVQ encoding per matrix and rate) are
// cached across calls, keyed by fingerprints of the weights, Hessian and
// shape: the targets of one model share most rates.
class hessian_mix {
public:
    explicit hessian_mix(hessian_mix_options options = {}) : options_(std::move(options)) {}

    [[nodiscard]] const hessian_mix_options& options() const noexcept { return options_; }

    // Chooses one candidate per problem at <= target_bpw over all of them.
    // `model` measures each matrix's loss at its target-rate candidate (else
    // the nearest rate below, else the lowest). With `loss_key`, the caller's
    // fingerprint of everything model.isolated_loss depends on besides the
    // matrix (the model, the data it runs on), those losses are cached under
    // it too. Candidates run on `threads` threads; the result does not depend
    // on the count. Throws invalid_argument for a bad problem or target, a
    // matrix no rate reaches, a non-finite loss, or a budget nothing fits.
    template <IsolatedLossSource Model>
    [[nodiscard]] hessian_mix_result allocate(std::span<const matrix_problem> ps, double target_bpw, Model& model,
                                              unsigned threads = 1, std::optional<std::uint64_t> loss_key = {}) {
        if (!(target_bpw > 0.0) || !std::isfinite(target_bpw))
            throw invalid_argument(fmt::format("hessian_mix: target {} bpw must be finite and > 0", target_bpw));
        const std::size_t n = ps.size();
        std::size_t weights = 0;
        for (const matrix_problem& p : ps) {
            detail::check_problem(p, "hessian_mix");
            weights += p.rows * p.cols;
        }
        std::vector<double> rates;
        for (const double d : options_.rate_offsets)
            if (target_bpw + d > 0.0) rates.push_back(target_bpw + d);
        if (std::find(rates.begin(), rates.end(), target_bpw) == rates.end()) rates.push_back(target_bpw);
        std::sort(rates.begin(), rates.end());

        // Candidates: (matrix, rate) pairs not cached yet, in parallel.
        std::vector<std::uint64_t> keys(n);
        for (std::size_t i = 0; i < n; ++i) keys[i] = detail::fingerprint(ps[i]);
        std::vector<std::pair<std::size_t, double>> todo;
        for (std::size_t i = 0; i < n; ++i)
            for (const double r : rates)
                if (!candidates_.contains({keys[i], rate_key(r)})) todo.emplace_back(i, r);
        std::vector<std::optional<detail::mix_candidate>> made(todo.size());
        detail::parallel_for(todo.size(), threads, [&](std::size_t t) {
            const matrix_problem& p = ps[todo[t].first];
            gptq_options g = options_.gptq;
            g.threads = 1;
            try {
                const config_candidate c =
                    choose_config(p.weights, p.rows, p.cols, p.hessian, todo[t].second, options_.config, g);
                const quantized_matrix q = quantize(p.weights, p.rows, p.cols, {.config = c.config, .hessian = p.hessian, .gptq = g});
                detail::mix_candidate m{todo[t].second,
                                        q.dequantize(),
                                        q.stored_bits(),
                                        q.config(),
                                        0.0,
                                        std::make_shared<const quantized_matrix>(q)};
                m.proxy = proxy_loss(p.weights, m.weights, p.rows, p.cols, p.hessian);
                made[t] = std::move(m);
            } catch (const invalid_argument&) {
                // this rate is out of reach for this shape: not a candidate
            }
        });
        for (std::size_t t = 0; t < todo.size(); ++t)
            candidates_[{keys[todo[t].first], rate_key(todo[t].second)}] = std::move(made[t]);
        std::vector<std::vector<const detail::mix_candidate*>> per(n);
        for (std::size_t i = 0; i < n; ++i)
            for (const double r : rates)
                if (const auto& c = candidates_.at({keys[i], rate_key(r)})) per[i].push_back(&*c);

        // Sensitivities: one matrix at its target-rate candidate (else the
        // nearest rate below, else the lowest).
        hessian_mix_result out;
        out.sensitivity.resize(n);
        std::vector<std::size_t> at_target(n, 0);
        for (std::size_t i = 0; i < n; ++i) {
            if (per[i].empty())
                throw invalid_argument(fmt::format("hessian_mix: no rate of {} reaches a PVQ configuration near {} bpw",
                                                   ps[i].name, target_bpw));
            for (std::size_t j = 0; j < per[i].size(); ++j)
                if (per[i][j]->rate <= target_bpw + 1e-12) at_target[i] = j;
            const detail::mix_candidate& c = *per[i][at_target[i]];
            // The name too: which matrix of the model is swapped in (two matrices could hold the same data).
            const loss_cache_key key{loss_key.value_or(0), keys[i], std::string(ps[i].name), rate_key(c.rate)};
            double loss = 0.0;
            if (const auto it = losses_.find(key); loss_key && it != losses_.end()) {
                loss = it->second;
            } else {
                loss = static_cast<double>(model.isolated_loss(i, std::span<const float>(c.weights)));
                if (loss_key) losses_.emplace(key, loss);
            }
            // Loss per unit of proxy loss. A matrix stored exactly at the target (proxy 0) takes the
            // largest proxy of its candidates as the unit; if every candidate is exact, it costs nothing.
            double largest = 0.0;
            for (const detail::mix_candidate* other : per[i]) {
                if (!std::isfinite(other->proxy) || other->proxy < 0.0)
                    throw invalid_argument(fmt::format("hessian_mix: proxy loss {} of {} at {} bpw", other->proxy,
                                                       ps[i].name, other->rate));
                largest = std::max(largest, other->proxy);
            }
            const double unit = c.proxy > 0.0 ? c.proxy : largest;
            if (!std::isfinite(loss))
                throw invalid_argument(fmt::format("hessian_mix: loss {} with {} alone quantized", loss, ps[i].name));
            out.sensitivity[i] = unit > 0.0 ? loss / unit : 0.0;
        }

        // The allocation.
        std::vector<std::vector<rate_option>> opts(n);
        for (std::size_t i = 0; i < n; ++i)
            for (const detail::mix_candidate* c : per[i])
                opts[i].push_back({c->stored_bits, out.sensitivity[i] * c->proxy});
        out.budget_bits = static_cast<std::size_t>(std::floor(target_bpw * static_cast<double>(weights)));
        const std::vector<std::size_t> pick = allocate_bits(opts, out.budget_bits, at_target);
        for (std::size_t i = 0; i < n; ++i) {
            const detail::mix_candidate& c = *per[i][pick[i]];
            out.matrices.push_back(c.matrix);
            out.weights.push_back(c.weights);
            out.configs.push_back(c.config);
            out.rates.push_back(c.rate);
            out.estimated_loss += opts[i][pick[i]].loss;
            out.uniform_estimated_loss += opts[i][at_target[i]].loss;
        }
        out.re_encoded.assign(n, false);
        return out;
    }

    // The sequential pass over `stages` (groups of problem indices, in the
    // order the model computes them; a matrix in no stage keeps its encoding
    // and counts as quantized from the start). Each stage's matrices are
    // encoded again at their configurations against model.drift() of the
    // model with every earlier stage replaced, so the bits do not change.
    // Throws invalid_argument for a result that is not of these problems, a
    // bad stage, damping or statistics, or a drift Hessian that is not
    // positive definite.
    template <DriftSource Model>
    [[nodiscard]] hessian_mix_result sequential(std::span<const matrix_problem> ps, hessian_mix_result result,
                                                const std::vector<std::vector<std::size_t>>& stages, Model& model,
                                                double damping, unsigned threads = 1) const {
        const std::size_t n = ps.size();
        if (result.matrices.size() != n || result.weights.size() != n || result.configs.size() != n)
            throw invalid_argument(fmt::format("hessian_mix::sequential: a result of {} matrices for {} problems",
                                               result.matrices.size(), n));
        if (!(damping >= 0.0) || !std::isfinite(damping))
            throw invalid_argument(fmt::format("hessian_mix::sequential: damping {} must be finite and >= 0", damping));
        std::vector<bool> staged(n, false);
        for (const std::vector<std::size_t>& stage : stages)
            for (const std::size_t i : stage) {
                if (i >= n || staged[i])
                    throw invalid_argument(fmt::format("hessian_mix::sequential: stage member {} ({} problems{})", i, n,
                                                       i < n ? ", named twice" : ""));
                staged[i] = true;
            }
        result.re_encoded.resize(n, false);
        std::vector<std::span<const float>> replaced(n);
        for (std::size_t i = 0; i < n; ++i)
            if (!staged[i]) replaced[i] = result.weights[i];
        for (const std::vector<std::size_t>& members : stages) {
            const std::vector<drift_statistics> stats =
                model.drift(std::span<const std::size_t>(members), std::span<const std::span<const float>>(replaced));
            if (stats.size() != members.size())
                throw invalid_argument(fmt::format("hessian_mix::sequential: {} drift statistics for {} matrices",
                                                   stats.size(), members.size()));
            detail::parallel_for(members.size(), threads, [&](std::size_t k) {
                const std::size_t i = members[k];
                const matrix_problem& p = ps[i];
                const auto cols = static_cast<Eigen::Index>(p.cols), rows = static_cast<Eigen::Index>(p.rows);
                if (stats[k].h.rows() != cols || stats[k].h.cols() != cols || stats[k].c.rows() != cols ||
                    stats[k].c.cols() != cols)
                    throw invalid_argument(fmt::format(
                        "hessian_mix::sequential: drift statistics of {} are {} x {} and {} x {}, not {} x {}", p.name,
                        stats[k].h.rows(), stats[k].h.cols(), stats[k].c.rows(), stats[k].c.cols(), cols, cols));
                const double lambda = damping * stats[k].h.diagonal().mean();
                const Eigen::MatrixXd hd = stats[k].h + lambda * Eigen::MatrixXd::Identity(cols, cols);
                const Eigen::MatrixXd cd =
                    options_.drift_correction
                        ? Eigen::MatrixXd(stats[k].c + lambda * Eigen::MatrixXd::Identity(cols, cols))
                        : hd;
                const Eigen::LLT<Eigen::MatrixXd> llt(hd);
                if (llt.info() != Eigen::Success)
                    throw invalid_argument(fmt::format(
                        "hessian_mix::sequential: damped drift Hessian of {} is not positive definite", p.name));
                const Eigen::MatrixXd w =
                    Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
                        p.weights.data(), rows, cols)
                        .cast<double>();
                // W' = W Cd Hd^-1, i.e. W'^T = Hd^-1 Cd^T W^T.
                const Eigen::MatrixXd target_t = llt.solve(cd.transpose() * w.transpose());
                std::vector<float> target(p.rows * p.cols);
                for (Eigen::Index r = 0; r < rows; ++r)
                    for (Eigen::Index c = 0; c < cols; ++c)
                        target[static_cast<std::size_t>(r * cols + c)] = static_cast<float>(target_t(c, r));
                std::vector<double> h(p.cols * p.cols);
                Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(h.data(), cols,
                                                                                                   cols) = hd;
                gptq_options g = options_.gptq;
                g.threads = 1;
                const quantized_matrix m = quantize(target, p.rows, p.cols, {.config = result.configs[i], .hessian = h, .gptq = g});
                if (m.stored_bits() != result.matrices[i]->stored_bits())
                    throw invalid_argument(fmt::format("hessian_mix::sequential: {} re-encoded to {} bits, not {}",
                                                       p.name, m.stored_bits(), result.matrices[i]->stored_bits()));
                result.weights[i] = m.dequantize();
                result.matrices[i] = std::make_shared<const quantized_matrix>(m);
            });
            for (const std::size_t i : members) {
                result.re_encoded[i] = true;
                replaced[i] = result.weights[i];
            }
        }
        return result;
    }

private:
    using loss_cache_key = std::tuple<std::uint64_t, std::uint64_t, std::string, long long>;

    [[nodiscard]] static long long rate_key(double rate) noexcept { return std::llround(rate * 1e6); }

    hessian_mix_options options_;
    std::map<std::pair<std::uint64_t, long long>, std::optional<detail::mix_candidate>> candidates_;
    std::map<loss_cache_key, double> losses_;
};

}  // namespace svq
