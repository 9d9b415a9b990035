// End-to-end evaluation of weight quantizers on a llama2.c model (protocol in
// docs/evaluation.md): every linear layer (wq wk wv wo w1 w2 w3 of every
// block; the token embedding optionally) is replaced by its reconstruction
// from a quantizer at a target bpw, and the quantized model is compared with
// the float one on the real text and on sequences sampled from the float model.
//
// A quantizer is a layer_quantizer: it receives one layer's weights and the
// damped Hessian of its inputs (from a calibration set sampled from the float
// model, disjoint from the evaluation set) and returns the dequantized weights
// and the number of bits it stores. New methods (CRVQ, ...) are one more
// entry in the method list; nothing else changes.
//
// Everything is deterministic for a seed: sampling uses llama2's portable
// generator, quantizers are deterministic, and work split over threads (layers,
// sequences) is reduced in a fixed order, so the numbers do not depend on
// --threads (tests/test_model_eval.cpp).
#pragma once

#include <common/llama2.hpp>

#include <svq/crvq/crvq.hpp>
#include <svq/error.hpp>
#include <svq/hessian/calibration.hpp>
#include <svq/hessian/gptq.hpp>
#include <svq/matrix/auto_config.hpp>
#include <svq/matrix/metrics.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/matrix/rtn.hpp>
#include <svq/trellis/trellis.hpp>
#include <svq/model/allocate.hpp>
#include <svq/model/mixed_precision.hpp>
#include <svq/model/parallel_for.hpp>
#include <svq/quantize.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace svq::model_eval {

// ---------------------------------------------------------------------------
// The quantizer hook

// One matrix handed to a quantizer (the library's problem type: name, shape,
// weights, damped Hessian X^T X / n + damping * mean(diag) I, threads).
using layer_problem = svq::matrix_problem;

// What a quantizer returns for one matrix.
struct layer_solution {
    std::vector<float> weights;   // the decoder's reconstruction, rows * cols row-major
    std::size_t stored_bits = 0;  // every stored bit: codes, scales, codebooks, seeds, ...
    std::string config;           // what was chosen, for the report
};

// Quantizes one matrix to at most target_bpw stored bits per weight.
using layer_quantizer = std::function<layer_solution(const layer_problem& layer, double target_bpw)>;

// Methods that quantize all matrices together (shared codebooks, CRVQ): one
// solution per layer, in order, and the bits they share, counted once.
// norms: RMSNorm weights a method re-fitted (pvq-tuned). They are float
// parameters in every row of the table, quantized or not (never stored bits),
// so a method may change their values; absent, the float model's stay.
struct norm_weights {
    std::vector<std::vector<float>> rms_att, rms_ffn;  // [layer][dim]
    std::vector<float> rms_final;                      // [dim]
    std::vector<float> token_embedding;                // empty: the float model's
};
struct model_solution {
    std::vector<layer_solution> layers;
    std::size_t shared_bits = 0;
    std::optional<norm_weights> norms;
};
using model_quantizer = std::function<model_solution(std::span<const layer_problem> layers, double target_bpw)>;

// What a whole-model method may use beyond the Hessians: the float model and
// the calibration set (never the evaluation sets or the real text).
struct calibration_context {
    const llama2::model* float_model = nullptr;
    const std::vector<std::vector<int>>* sequences = nullptr;  // the calibration set
    unsigned threads = 1;
    double damping = 0.01;  // as the Hessians' (run_options::damping)
};
using calibrated_quantizer =
    std::function<model_solution(std::span<const layer_problem> layers, double target_bpw, const calibration_context&)>;

// A method has one of the three: a per-matrix quantizer (run on the layers in
// parallel), a whole-model one, or a whole-model one that also runs the float
// model on the calibration set.
struct method {
    std::string name;
    layer_quantizer quantize;
    model_quantizer quantize_all = {};
    calibrated_quantizer quantize_calibrated = {};
};

// For each integer width b in 1..8, the smallest group G in {8, 16, ..., 256}
// (the most scales) whose int-b layout with fp16 scales, b + 16 * ceil(cols / G)
// / cols bpw as rtn_matrix counts it, is at most the target.
[[nodiscard]] inline std::vector<rtn_config> rtn_candidates(std::size_t cols, double target_bpw) {
    std::vector<rtn_config> out;
    for (unsigned b = 1; b <= 8; ++b) {
        for (const std::size_t g : {8u, 16u, 32u, 64u, 128u, 256u}) {
            const std::size_t groups = (cols + g - 1) / g;
            if (b + 16.0 * static_cast<double>(groups) / static_cast<double>(cols) <= target_bpw + 1e-12) {
                out.push_back({b, g});
                break;
            }
        }
    }
    return out;
}

namespace detail {

[[nodiscard]] inline std::string rtn_name(const rtn_config& c) { return fmt::format("int{} g{}", c.bits, c.group); }

// The RTN candidate (rtn_candidates) whose result has the smallest loss; `make`
// quantizes with a config, `loss` scores a reconstruction.
template <class Make, class Loss>
layer_solution best_rtn(const layer_problem& p, double target, const char* who, Make&& make, Loss&& loss) {
    const std::vector<rtn_config> candidates = rtn_candidates(p.cols, target);
    if (candidates.empty()) {
        throw invalid_argument(fmt::format("{}: no int-b group layout of {} ({} columns) reaches {} bpw (int1 g256 is {:.4f})",
                                           who, p.name, p.cols, target,
                                           1.0 + 16.0 * static_cast<double>((p.cols + 255) / 256) / static_cast<double>(p.cols)));
    }
    layer_solution best;
    double best_loss = std::numeric_limits<double>::infinity();
    for (const rtn_config& c : candidates) {
        const rtn_matrix q = make(c);
        std::vector<float> w = q.dequantize();
        const double l = loss(w);
        if (l < best_loss) {
            best_loss = l;
            best = {std::move(w), q.stored_bits(), rtn_name(c)};
        }
    }
    return best;
}

}  // namespace detail

// Round to nearest, absmax int-b per group with an fp16 scale (rtn.hpp); the
// width and group are the candidate with the smallest MSE (no calibration data).
[[nodiscard]] inline layer_solution quantize_rtn(const layer_problem& p, double target) {
    return detail::best_rtn(
        p, target, "rtn", [&](const rtn_config& c) { return rtn_quantize(p.weights, p.rows, p.cols, c); },
        [&](const std::vector<float>& w) { return mean_squared_error(p.weights, w); });
}

// GPTQ with int-b groups (gptq.hpp); the candidate with the smallest proxy loss under the damped H.
[[nodiscard]] inline layer_solution quantize_gptq_rtn(const layer_problem& p, double target) {
    gptq_options options;
    options.threads = p.threads;
    return detail::best_rtn(
        p, target, "gptq-rtn",
        [&](const rtn_config& c) { return gptq_rtn_quantize(p.weights, p.rows, p.cols, p.hessian, c, options); },
        [&](const std::vector<float>& w) { return proxy_loss(p.weights, w, p.rows, p.cols, p.hessian); });
}

// Plain PVQ at the configuration auto_config picks by SQNR (no calibration data).
[[nodiscard]] inline layer_solution quantize_pvq(const layer_problem& p, double target) {
    const quantized_matrix q = quantize(p.weights, p.rows, p.cols, {.target_bpw = target});
    return {q.dequantize(), q.stored_bits(), to_string(q.config())};
}

// The trellis codec (trellis/trellis.hpp), L = 12, at the largest rate within the target.
[[nodiscard]] inline layer_solution quantize_trellis_layer(const layer_problem& p, double target) {
    const trellis_matrix q =
        quantize_trellis(p.weights, p.rows, p.cols, trellis_config_for(p.rows, p.cols, target), p.threads);
    return {q.dequantize(), q.stored_bits(), to_string(q.config())};
}

// Hessian PVQ (gptq.hpp), configuration chosen by proxy loss.
[[nodiscard]] inline layer_solution quantize_pvq_hessian(const layer_problem& p, double target) {
    gptq_options options;
    options.threads = p.threads;
    const quantized_matrix q = quantize(p.weights, p.rows, p.cols, {.target_bpw = target, .hessian = p.hessian, .gptq = options});
    return {q.dequantize(), q.stored_bits(), to_string(q.config())};
}

// CRVQ (crvq/crvq.hpp) over all the layers with shared codebooks (counted once:
// model_solution::shared_bits): 2% critical channels, 3 extended codebooks of
// 16 entries of 4 rows (what examples/crvq_quantize uses on this model).
// k-means base (kmeans_base): the base codebook (d, b) with the highest rate
// b / d whose whole result stays at or under the target (tried from the top
// down). PVQ base (pvq_base): Hessian PVQ at the target less the extension's
// bits (lowered again by the excess if the result is over).
template <class B>
    requires CrvqBase<B>
[[nodiscard]] model_solution quantize_crvq(std::span<const layer_problem> ps, double target) {
    constexpr bool pvq = std::is_same_v<B, pvq_base>;
    std::vector<crvq_layer> layers;
    std::size_t weights = 0;
    for (const layer_problem& p : ps) {
        layers.push_back({p.weights, p.rows, p.cols, p.hessian});
        weights += p.rows * p.cols;
    }
    crvq_config<B> c;
    c.extended_dim = 4;
    c.extended_bits = 4;
    c.critical_fraction = 0.02;
    if constexpr (pvq) c.base.gptq.threads = ps.empty() ? 1u : ps.front().threads;
    else c.base.permute = false;
    const auto solve = [&](const crvq_config<B>& config) {
        const crvq_model<B> m = crvq_quantize(layers, config);
        model_solution out;
        out.shared_bits = m.codebooks ? m.codebooks->stored_bits() : 0;
        for (std::size_t i = 0; i < m.matrices.size(); ++i) {
            const crvq_matrix<B>& q = m.matrices[i];
            std::string base;
            if constexpr (pvq) base = to_string(q.base_part().config());
            else base = fmt::format("base d{} b{}", config.base.dim, config.base.bits);
            out.layers.push_back({q.dequantize(), q.stored_bits(), base + " + 3 x (d4 b4) on 2%"});
        }
        return std::pair{std::move(out), m.bits_per_weight()};
    };
    if constexpr (pvq) {
        // The extension's bits: critical channel indices and codes per matrix, its codebooks once.
        std::size_t extension = c.extended_codebooks * (std::size_t{1} << c.extended_bits) * c.extended_dim * 16;
        for (const layer_problem& p : ps) {
            const std::size_t critical = svq::detail::critical_count(c, p.cols);
            extension += critical * (svq::detail::column_index_bits(p.cols) +
                                     c.extended_codebooks * ((p.rows + c.extended_dim - 1) / c.extended_dim) * c.extended_bits);
        }
        c.base.target_bpw = target - static_cast<double>(extension) / static_cast<double>(weights);
        for (int attempt = 0;; ++attempt) {
            auto [solution, bpw] = solve(c);
            if (bpw <= target + 1e-12 || attempt == 3) return std::move(solution);
            c.base.target_bpw -= bpw - target + 0.002;
        }
    } else {
        struct rate {
            std::size_t d;
            unsigned b;
        };
        std::vector<rate> rates;
        for (const std::size_t d : {1u, 2u, 3u, 4u, 6u, 8u})
            for (unsigned b = 1; b <= 8; ++b) rates.push_back({d, b});
        std::sort(rates.begin(), rates.end(), [](const rate& x, const rate& y) {
            return static_cast<double>(x.b) * static_cast<double>(y.d) > static_cast<double>(y.b) * static_cast<double>(x.d);
        });
        for (const rate& r : rates) {
            if (static_cast<double>(r.b) / static_cast<double>(r.d) > target) continue;
            c.base.dim = r.d;
            c.base.bits = r.b;
            auto [solution, bpw] = solve(c);
            if (bpw <= target + 1e-12) return std::move(solution);
        }
        throw invalid_argument(fmt::format("crvq: no base codebook reaches {} bpw", target));
    }
}

// ---------------------------------------------------------------------------
// Threads

namespace detail {

// The library's index-at-a-time loop (svq/model/parallel_for.hpp).
using svq::detail::parallel_for;

}  // namespace detail

// ---------------------------------------------------------------------------
// Metrics against the float model

// A quantized (or float) model on one evaluation set.
struct set_metrics {
    std::size_t sequences = 0;
    std::size_t positions = 0;  // scored positions: sum of (length - 1)
    double mean_nll = 0.0;      // nats per scored token
    double perplexity = 0.0;    // exp(mean_nll)
    double mean_kl = 0.0;       // mean over positions of KL(float || model) of the next-token distributions, nats
    double max_kl = 0.0;        // largest single-position KL
    double top1 = 0.0;          // share of positions whose most likely token equals the float model's

    friend bool operator==(const set_metrics&, const set_metrics&) = default;
};

// The float model's next-token log-probabilities on a set of sequences, kept
// so that each candidate runs only its own forward passes.
class reference_set {
public:
    reference_set(const llama2::model& float_model, std::vector<std::vector<int>> sequences, unsigned threads)
        : sequences_(std::move(sequences)), vocab_(static_cast<std::size_t>(float_model.config().vocab_size)) {
        std::size_t positions = 0;
        for (const std::vector<int>& s : sequences_) {
            offsets_.push_back(positions);
            positions += s.empty() ? 0 : s.size() - 1;
        }
        positions_ = positions;
        log_probs_.resize(positions * vocab_);
        top1_.resize(positions);
        detail::parallel_for(sequences_.size(), threads, [&](std::size_t s) {
            run(float_model, s, [&](std::size_t position, std::span<const float> logits, double log_z) {
                float* lp = log_probs_.data() + position * vocab_;
                for (std::size_t i = 0; i < vocab_; ++i) lp[i] = log_prob(logits[i], log_z);
                top1_[position] = llama2::detail::argmax(logits);
            });
        });
    }

    [[nodiscard]] const std::vector<std::vector<int>>& sequences() const noexcept { return sequences_; }
    [[nodiscard]] std::size_t positions() const noexcept { return positions_; }

    // Perplexity of `candidate` on the sequences and its divergence from the float model.
    [[nodiscard]] set_metrics evaluate(const llama2::model& candidate, unsigned threads) const {
        if (static_cast<std::size_t>(candidate.config().vocab_size) != vocab_)
            throw invalid_argument(
                fmt::format("candidate vocab_size {} differs from the reference's {}", candidate.config().vocab_size, vocab_));
        struct partial {
            double nll = 0.0, kl = 0.0, max_kl = 0.0;
            std::size_t agree = 0;
        };
        std::vector<partial> partials(sequences_.size());
        detail::parallel_for(sequences_.size(), threads, [&](std::size_t s) {
            partial& out = partials[s];
            const std::vector<int>& sequence = sequences_[s];
            run(candidate, s, [&](std::size_t position, std::span<const float> logits, double log_z) {
                const float* ref = log_probs_.data() + position * vocab_;
                double kl = 0.0;
                for (std::size_t i = 0; i < vocab_; ++i) {
                    const double r = ref[i];
                    kl += std::exp(r) * (r - static_cast<double>(log_prob(logits[i], log_z)));
                }
                kl = std::max(kl, 0.0);  // rounding can leave -1e-17 where the distributions agree
                out.kl += kl;
                out.max_kl = std::max(out.max_kl, kl);
                out.agree += llama2::detail::argmax(logits) == top1_[position] ? 1 : 0;
                const std::size_t p = position - offsets_[s];
                out.nll += log_z - static_cast<double>(logits[static_cast<std::size_t>(sequence[p + 1])]);
            });
        });
        set_metrics m;
        m.sequences = sequences_.size();
        m.positions = positions_;
        double nll = 0.0, kl = 0.0;
        std::size_t agree = 0;
        for (const partial& p : partials) {  // fixed order: independent of the thread count
            nll += p.nll;
            kl += p.kl;
            agree += p.agree;
            m.max_kl = std::max(m.max_kl, p.max_kl);
        }
        if (positions_ > 0) {
            const auto n = static_cast<double>(positions_);
            m.mean_nll = nll / n;
            m.mean_kl = kl / n;
            m.top1 = static_cast<double>(agree) / n;
        }
        m.perplexity = std::exp(m.mean_nll);
        return m;
    }

private:
    // log p_i rounded to float (the reference and a candidate round alike, so a
    // model identical to the float one has KL exactly 0).
    [[nodiscard]] static float log_prob(float logit, double log_z) noexcept {
        return static_cast<float>(static_cast<double>(logit) - log_z);
    }

    // Runs sequence s through m; at each scored position calls
    // visit(global position, logits, log-partition of the logits).
    template <class Visit>
    void run(const llama2::model& m, std::size_t s, Visit&& visit) const {
        const std::vector<int>& sequence = sequences_[s];
        llama2::session session(m);
        for (std::size_t p = 0; p + 1 < sequence.size(); ++p) {
            const std::span<const float> logits = session.forward(sequence[p], static_cast<int>(p));
            visit(offsets_[s] + p, logits, llama2::detail::log_partition(logits));
        }
    }

    std::vector<std::vector<int>> sequences_;
    std::size_t vocab_ = 0;
    std::size_t positions_ = 0;
    std::vector<std::size_t> offsets_;  // [sequences] first global position of each
    std::vector<float> log_probs_;      // [positions, vocab]
    std::vector<int> top1_;             // [positions]
};

// ---------------------------------------------------------------------------
// Calibration

// The damped Hessian X^T X / n + damping * mean(diag) I of every linear
// layer's input (model::linear_infos() order) while the float model runs over
// `sequences`, every position.
[[nodiscard]] inline std::vector<std::vector<double>> calibration_hessians(const llama2::model& m,
                                                                           const std::vector<std::vector<int>>& sequences,
                                                                           double damping) {
    const std::vector<llama2::linear_info>& infos = m.linear_infos();
    std::vector<hessian_accumulator> accumulators;
    std::vector<std::vector<float>> pending(infos.size());  // inputs batched per layer
    accumulators.reserve(infos.size());
    for (const llama2::linear_info& info : infos) accumulators.emplace_back(static_cast<std::size_t>(info.cols));
    constexpr std::size_t batch_tokens = 256;
    const auto flush = [&](std::size_t i) {
        const auto cols = static_cast<std::size_t>(infos[i].cols);
        if (!pending[i].empty()) accumulators[i].add(pending[i], pending[i].size() / cols);
        pending[i].clear();
    };
    llama2::collect_activations(m, sequences, [&](const llama2::linear_info& info, std::span<const float> input) {
        std::vector<float>& buffer = pending[info.index];
        buffer.insert(buffer.end(), input.begin(), input.end());
        if (buffer.size() >= batch_tokens * input.size()) flush(info.index);
    });
    std::vector<std::vector<double>> out;
    out.reserve(infos.size());
    for (std::size_t i = 0; i < infos.size(); ++i) {
        flush(i);
        out.push_back(accumulators[i].damped_hessian(damping));
    }
    return out;
}

// ---------------------------------------------------------------------------
// Mixed precision across matrices (pvq-hessian-mix)
//
// Every matrix gets Hessian PVQ candidates at several rates (target + each of
// mix_options::rate_offsets); the model's loss is estimated as the sum over
// matrices of s_i * proxy_i(candidate), where proxy_i = tr(dW H dW^T) under the
// calibration Hessian and s_i = KL_i / proxy_i at the target-rate candidate,
// KL_i being the mean KL(float || model with matrix i alone quantized) of the
// next-token distributions on the first sensitivity_sequences calibration
// sequences. The per-matrix choice minimises that estimate subject to
// sum of stored bits <= floor(target * weights) (allocate_bits). Everything
// comes from the float model and the calibration set.

// The search itself is svq::hessian_mix (svq/model/mixed_precision.hpp); this
// part supplies what it needs from llama2: the KL with one matrix swapped in
// (the sensitivities) and the drift statistics of the sequential pass.

// The library's options plus the calibration subsets this adapter runs on.
struct mix_options : svq::hessian_mix_options {
    std::size_t sensitivity_sequences = 16;  // first calibration sequences the KL runs on
    // Second pass (sequential calibration with drift correction, see
    // svq::hessian_mix::sequential): the chosen configurations are kept (same
    // bits) and each matrix is encoded again, in model order, against the
    // inputs of the model quantized so far.
    bool sequential = false;
    std::size_t sequential_sequences = 32;  // first calibration sequences of that pass
};

using svq::allocate_bits;
using svq::rate_option;

namespace detail {

// H~ = X~^T X~ / n and C = X^T X~ / n for the linears `wanted` (model::linears()
// indices): X the float model's inputs, X~ the quantized model's at the same
// positions of `sequences`. Fixed chunks of sequences reduced in order: the
// result does not depend on `threads`.
using svq::drift_statistics;
using svq::detail::fingerprint;

inline std::vector<drift_statistics> collect_drift(const llama2::model& float_model, const llama2::model& quantized,
                                                   const std::vector<std::vector<int>>& sequences,
                                                   const std::vector<std::size_t>& wanted, unsigned threads) {
    const std::vector<llama2::linear_info>& infos = float_model.linear_infos();
    constexpr std::size_t chunks = 8, batch = 256;
    std::vector<std::vector<drift_statistics>> partial(chunks);
    std::size_t tokens = 0;
    for (const std::vector<int>& q : sequences) tokens += q.size();
    detail::parallel_for(chunks, threads, [&](std::size_t chunk) {
        std::vector<drift_statistics>& acc = partial[chunk];
        std::vector<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> bf(wanted.size()), bq(wanted.size());
        std::vector<std::vector<float>> xf(wanted.size()), xq(wanted.size());
        for (std::size_t k = 0; k < wanted.size(); ++k) {
            const auto cols = static_cast<Eigen::Index>(infos[wanted[k]].cols);
            acc.push_back({Eigen::MatrixXd::Zero(cols, cols), Eigen::MatrixXd::Zero(cols, cols)});
            bf[k].resize(static_cast<Eigen::Index>(batch), cols);
            bq[k].resize(static_cast<Eigen::Index>(batch), cols);
        }
        std::size_t filled = 0;
        const auto flush = [&] {
            for (std::size_t k = 0; k < wanted.size(); ++k) {
                const auto f = bf[k].topRows(static_cast<Eigen::Index>(filled));
                const auto q = bq[k].topRows(static_cast<Eigen::Index>(filled));
                acc[k].h.noalias() += q.transpose() * q;
                acc[k].c.noalias() += f.transpose() * q;
            }
            filled = 0;
        };
        const auto hook_into = [&](std::vector<std::vector<float>>& dst) {
            return [&wanted, &dst](const llama2::linear_info& info, std::span<const float> input) {
                const auto it = std::find(wanted.begin(), wanted.end(), info.index);
                if (it != wanted.end()) dst[static_cast<std::size_t>(it - wanted.begin())].assign(input.begin(), input.end());
            };
        };
        llama2::session sf(float_model), sq(quantized);
        sf.set_activation_hook(hook_into(xf));
        sq.set_activation_hook(hook_into(xq));
        for (std::size_t s = chunk; s < sequences.size(); s += chunks) {
            for (std::size_t p = 0; p < sequences[s].size(); ++p) {
                (void)sf.forward(sequences[s][p], static_cast<int>(p));
                (void)sq.forward(sequences[s][p], static_cast<int>(p));
                for (std::size_t k = 0; k < wanted.size(); ++k)
                    for (std::size_t j = 0; j < xf[k].size(); ++j) {
                        bf[k](static_cast<Eigen::Index>(filled), static_cast<Eigen::Index>(j)) = xf[k][j];
                        bq[k](static_cast<Eigen::Index>(filled), static_cast<Eigen::Index>(j)) = xq[k][j];
                    }
                if (++filled == batch) flush();
            }
        }
        flush();
    });
    std::vector<drift_statistics> out = std::move(partial[0]);
    for (std::size_t chunk = 1; chunk < chunks; ++chunk)
        for (std::size_t k = 0; k < wanted.size(); ++k) {
            out[k].h += partial[chunk][k].h;
            out[k].c += partial[chunk][k].c;
        }
    const double n = static_cast<double>(std::max<std::size_t>(tokens, 1));
    for (drift_statistics& d : out) {
        d.h /= n;
        d.c /= n;
    }
    return out;
}

}  // namespace detail

// What pvq-hessian-mix chose, for the report and the tests.
struct mix_result {
    model_solution solution;
    std::vector<matrix_config> configs;   // per matrix
    std::vector<std::shared_ptr<const quantized_matrix>> matrices;  // per matrix, the stored form of solution.layers
    std::vector<double> rates;            // the candidate rate each matrix got
    std::vector<double> sensitivity;      // s_i = KL_i / proxy_i
    std::size_t budget_bits = 0;          // floor(target * weights)
    double estimated_loss = 0.0;          // sum of s_i proxy_i of the choice
    double uniform_estimated_loss = 0.0;  // the same for every matrix at the target
};

namespace detail {

// The problems' matrices in a copy of the model: linears by name, anything
// else is the token embedding (refs.size() in the returned indices).
inline std::vector<std::size_t> linear_indices(const llama2::model& m, std::span<const layer_problem> ps) {
    const std::vector<llama2::linear_view> views = m.linears();
    std::vector<std::size_t> out(ps.size(), views.size());
    for (std::size_t i = 0; i < ps.size(); ++i)
        for (std::size_t k = 0; k < views.size(); ++k)
            if (views[k].name == ps[i].name) out[i] = k;
    return out;
}

// Writes w into the problem's matrix of m (linear_of: linear_indices).
inline void put_matrix(llama2::model& m, std::size_t linear, std::string_view name, std::span<const float> w) {
    const std::vector<llama2::linear_ref> refs = m.linears();
    const std::span<float> dst = linear < refs.size() ? refs[linear].weights : m.mutable_token_embedding();
    if (dst.size() != w.size())
        throw invalid_argument(fmt::format("pvq-hessian-mix: {} ({} weights) is not a matrix of the model ({} there)", name,
                                           w.size(), dst.size()));
    std::copy(w.begin(), w.end(), dst.begin());
}

// svq::IsolatedLossSource: mean KL(float || model with one matrix swapped in)
// of the next-token distributions on `sequences`; the float model's side is
// computed at the first call.
struct isolated_kl {
    const llama2::model& float_model;
    std::span<const layer_problem> ps;
    std::vector<std::size_t> linear_of;
    const std::vector<std::vector<int>>& sequences;
    unsigned threads = 1;
    std::optional<reference_set> reference{};

    double isolated_loss(std::size_t i, std::span<const float> weights) {
        if (!reference) reference.emplace(float_model, sequences, threads);
        llama2::model m = float_model;
        put_matrix(m, linear_of[i], ps[i].name, weights);
        return reference->evaluate(m, threads).mean_kl;
    }
};

// svq::DriftSource: collect_drift over the model with the replaced matrices.
struct drift_collector {
    const llama2::model& float_model;
    std::span<const layer_problem> ps;
    std::vector<std::size_t> linear_of;
    const std::vector<std::vector<int>>& sequences;
    unsigned threads = 1;

    std::vector<drift_statistics> drift(std::span<const std::size_t> members,
                                        std::span<const std::span<const float>> replaced) const {
        llama2::model q = float_model;
        for (std::size_t j = 0; j < replaced.size(); ++j)
            if (!replaced[j].empty()) put_matrix(q, linear_of[j], ps[j].name, replaced[j]);
        std::vector<std::size_t> wanted;
        for (const std::size_t i : members) wanted.push_back(linear_of[i]);
        return collect_drift(float_model, q, sequences, wanted, threads);
    }
};

}  // namespace detail

// Candidates, sensitivities and sequential results are cached across calls
// (the targets of a run share rates), keyed by fingerprints of every input
// they depend on.
class pvq_hessian_mix {
public:
    explicit pvq_hessian_mix(mix_options options = {}) : options_(std::move(options)), search_(options_) {}

    mix_result run(std::span<const layer_problem> ps, double target, const calibration_context& ctx) {
        return run(ps, target, ctx, options_.sequential);
    }

    // The same with mix_options::sequential set to `sequential` (the candidates
    // and sensitivities are shared: pvq-hessian-mix and -mix-seq share one object).
    mix_result run(std::span<const layer_problem> ps, double target, const calibration_context& ctx, bool sequential) {
        if (ctx.float_model == nullptr || ctx.sequences == nullptr || ctx.sequences->empty())
            throw invalid_argument("pvq-hessian-mix needs the float model and a non-empty calibration set");
        const llama2::model& float_model = *ctx.float_model;
        const std::vector<std::size_t> linear_of = detail::linear_indices(float_model, ps);
        const std::vector<std::vector<int>> subset(
            ctx.sequences->begin(),
            ctx.sequences->begin() + static_cast<std::ptrdiff_t>(std::min(options_.sensitivity_sequences, ctx.sequences->size())));
        std::uint64_t model_key = detail::fingerprint(float_model.token_embedding().data(), float_model.token_embedding().size_bytes());
        for (const llama2::linear_view& v : float_model.linears())
            model_key = detail::fingerprint(v.weights.data(), v.weights.size_bytes(), model_key);
        for (const std::vector<int>& s : subset) model_key = detail::fingerprint(s.data(), s.size() * sizeof(int), model_key);
        detail::isolated_kl kl{float_model, ps, linear_of, subset, ctx.threads};
        svq::hessian_mix_result chosen = search_.allocate(ps, target, kl, ctx.threads, model_key);
        if (!sequential) return report(chosen);

        // The pass depends on the choice, the matrices and Hessians (keys), the float
        // model and the calibration sequences it runs on, and the damping: cached on those.
        std::vector<std::uint64_t> keys;
        for (const layer_problem& p : ps) keys.push_back(detail::fingerprint(p));
        std::uint64_t h = detail::fingerprint(keys.data(), keys.size() * sizeof(std::uint64_t), model_key);
        const std::size_t sequential_count = std::min(options_.sequential_sequences, ctx.sequences->size());
        for (std::size_t s = 0; s < sequential_count; ++s)
            h = detail::fingerprint((*ctx.sequences)[s].data(), (*ctx.sequences)[s].size() * sizeof(int), h);
        h = detail::fingerprint(&ctx.damping, sizeof ctx.damping, h);
        const std::pair key{h, std::llround(target * 1e6)};
        if (const auto it = sequential_.find(key); it != sequential_.end()) return it->second;
        const std::vector<std::vector<int>> pass_subset(ctx.sequences->begin(),
                                                        ctx.sequences->begin() + static_cast<std::ptrdiff_t>(sequential_count));
        detail::drift_collector drift{float_model, ps, linear_of, pass_subset, ctx.threads};
        const mix_result out =
            report(search_.sequential(ps, std::move(chosen), stages(float_model, linear_of), drift, ctx.damping, ctx.threads));
        sequential_.emplace(key, out);
        return out;
    }

private:
    // Stages in model order (per block: wq wk wv, then wo, then w1 w3, then
    // w2); each sees the model with every earlier stage (and the embedding,
    // when quantized: in no stage) already replaced.
    static std::vector<std::vector<std::size_t>> stages(const llama2::model& m, const std::vector<std::size_t>& linear_of) {
        const std::vector<llama2::linear_view> views = m.linears();
        const auto stage_of = [&](std::size_t linear) {
            const llama2::linear_kind k = views[linear].kind;
            const std::size_t part = k == llama2::linear_kind::wo   ? 1
                                     : k == llama2::linear_kind::w1 || k == llama2::linear_kind::w3 ? 2
                                     : k == llama2::linear_kind::w2 ? 3
                                                                    : 0;
            return static_cast<std::size_t>(views[linear].layer) * 4 + part;
        };
        std::map<std::size_t, std::vector<std::size_t>> by_stage;  // stage -> problem indices
        for (std::size_t i = 0; i < linear_of.size(); ++i)
            if (linear_of[i] < views.size()) by_stage[stage_of(linear_of[i])].push_back(i);
        std::vector<std::vector<std::size_t>> out;
        for (auto& [stage, members] : by_stage) out.push_back(std::move(members));
        return out;
    }

    // The library's result as the table's solution, with the report strings.
    static mix_result report(const svq::hessian_mix_result& r) {
        mix_result out;
        for (std::size_t i = 0; i < r.matrices.size(); ++i)
            out.solution.layers.push_back({r.weights[i], r.matrices[i]->stored_bits(),
                                           fmt::format("{} ({:.2f} bpw slot, s {:.3g}){}", to_string(r.configs[i]), r.rates[i],
                                                       r.sensitivity[i], r.re_encoded[i] ? ", sequential" : "")});
        out.configs = r.configs;
        out.matrices = r.matrices;
        out.rates = r.rates;
        out.sensitivity = r.sensitivity;
        out.budget_bits = r.budget_bits;
        out.estimated_loss = r.estimated_loss;
        out.uniform_estimated_loss = r.uniform_estimated_loss;
        return out;
    }

    mix_options options_;
    svq::hessian_mix search_;
    std::map<std::pair<std::uint64_t, long long>, mix_result> sequential_;  // results of the sequential pass
};

// The method: a fresh cache per method object (shared by its targets).
[[nodiscard]] inline method pvq_hessian_mix_method(mix_options options = {}, std::string name = "pvq-hessian-mix") {
    auto state = std::make_shared<pvq_hessian_mix>(std::move(options));
    return {std::move(name), nullptr, nullptr,
            [state](std::span<const layer_problem> ps, double target, const calibration_context& ctx) {
                return state->run(ps, target, ctx).solution;
            }};
}

// pvq-hessian-mix (the allocation) and pvq-hessian-mix-seq (the same
// allocation, then the sequential drift-corrected pass), sharing one cache
// (`state`; other methods built on the same allocation may share it too).
[[nodiscard]] inline std::vector<method> pvq_hessian_mix_methods(std::shared_ptr<pvq_hessian_mix> state) {
    std::vector<method> out;
    for (const bool sequential : {false, true})
        out.push_back({sequential ? "pvq-hessian-mix-seq" : "pvq-hessian-mix", nullptr, nullptr,
                       [state, sequential](std::span<const layer_problem> ps, double target, const calibration_context& ctx) {
                           return state->run(ps, target, ctx, sequential).solution;
                       }});
    return out;
}

// rtn, gptq-rtn, pvq, trellis, pvq-hessian, pvq-hessian-mix,
// pvq-hessian-mix-seq (the last two on `mix`'s cache).
[[nodiscard]] inline std::vector<method> standard_methods(
    std::shared_ptr<pvq_hessian_mix> mix = std::make_shared<pvq_hessian_mix>()) {
    std::vector<method> out = {{"rtn", quantize_rtn},
                               {"gptq-rtn", quantize_gptq_rtn},
                               {"pvq", quantize_pvq},
                               {"trellis", quantize_trellis_layer},
                               {"pvq-hessian", quantize_pvq_hessian}};
    for (method& m : pvq_hessian_mix_methods(std::move(mix))) out.push_back(std::move(m));
    return out;
}

// ---------------------------------------------------------------------------
// The table

struct run_options {
    std::filesystem::path data_dir;  // stories260K.bin, tok512.bin, tinystories_valid_sample.txt
    std::uint64_t seed = 1;          // evaluation set: seed; calibration set: seed + calibration_seed_offset
    int sequences = 64;              // sampled evaluation sequences
    int length = 256;                // tokens per sampled sequence (BOS included)
    int calibration_sequences = 1024;  // sampled calibration sequences, same length (pvq-tuned trains on them)
    float calibration_temperature = 1.0f;  // sampling temperature of the calibration set (the evaluation set's is 1)
    std::vector<double> targets = {2.0, 2.5, 3.0, 3.25, 4.0};
    std::vector<std::string> methods;  // names to run; empty: all given
    bool embedding = false;            // also rows with the token embedding (= classifier) quantized
    double damping = 0.01;
    unsigned threads = 1;
};

inline constexpr std::uint64_t calibration_seed_offset = 0x9E3779B97F4A7C15ull;

// The calibration set: o.calibration_sequences sampled with seed +
// calibration_seed_offset, skipping any draw that is also in the evaluation
// set (short sequences from a small model do repeat), so the two sets are
// disjoint by construction. One sampling stream: when no draw is skipped the
// set is exactly the first o.calibration_sequences draws.
[[nodiscard]] inline std::vector<std::vector<int>> disjoint_calibration(const llama2::model& m,
                                                                        const std::vector<std::vector<int>>& evaluation,
                                                                        const run_options& o) {
    for (int extra = 0;; extra = 2 * extra + 4) {
        std::vector<std::vector<int>> kept;
        for (std::vector<int>& c : llama2::sample_sequences(m, o.calibration_sequences + extra, o.length,
                                                            o.seed + calibration_seed_offset, o.calibration_temperature)) {
            if (static_cast<int>(kept.size()) == o.calibration_sequences) break;
            if (std::find(evaluation.begin(), evaluation.end(), c) == evaluation.end()) kept.push_back(std::move(c));
        }
        if (static_cast<int>(kept.size()) == o.calibration_sequences) return kept;
        if (extra > 64 * (o.calibration_sequences + 1))
            throw invalid_argument(fmt::format(
                "cannot sample {} calibration sequences of length {} outside the evaluation set (seed {})",
                o.calibration_sequences, o.length, o.seed));
    }
}

struct table_row {
    std::string method;  // "float" for the reference row
    double target_bpw = 0.0;
    bool embedding = false;
    std::size_t stored_bits = 0;  // over every quantized matrix
    std::size_t weights = 0;      // quantized weights
    double bpw = 32.0;            // stored_bits / weights (32 for the float row)
    set_metrics real;             // the real text (README protocol)
    set_metrics sampled;          // the sampled evaluation set
    double rel_real = 0.0;        // real-text perplexity / float's - 1
    double rel_sampled = 0.0;
    double quantize_seconds = 0.0;
    std::vector<std::string> layer_configs;  // "name: config"

    // Every number but the timing.
    [[nodiscard]] bool same_numbers(const table_row& o) const {
        return method == o.method && target_bpw == o.target_bpw && embedding == o.embedding &&
               stored_bits == o.stored_bits && weights == o.weights && bpw == o.bpw && real == o.real &&
               sampled == o.sampled && rel_real == o.rel_real && rel_sampled == o.rel_sampled &&
               layer_configs == o.layer_configs;
    }
};

struct table {
    std::size_t real_documents = 0;
    std::size_t evaluation_positions = 0;
    std::size_t calibration_tokens = 0;
    std::size_t shared_sequences = 0;  // sampled sequences in both sets (0 expected)
    std::vector<table_row> rows;       // rows[0] is the float model
};

[[nodiscard]] inline bool data_present(const std::filesystem::path& dir) {
    return std::filesystem::exists(dir / "stories260K.bin") && std::filesystem::exists(dir / "tok512.bin") &&
           std::filesystem::exists(dir / "tinystories_valid_sample.txt");
}

// Writes a method's re-fitted norm weights (and token embedding, when it has
// one) into m. Throws svq::invalid_argument, naming `who`, for a wrong shape.
inline void apply_norms(llama2::model& m, const norm_weights& n, std::string_view who) {
    const auto layers = static_cast<std::size_t>(m.config().n_layers);
    if (n.rms_att.size() != layers || n.rms_ffn.size() != layers)
        throw invalid_argument(fmt::format("{} returned norm weights for {} and {} layers, not {}", who, n.rms_att.size(),
                                           n.rms_ffn.size(), layers));
    const auto put = [&](std::span<float> dst, const std::vector<float>& src) {
        if (src.size() != dst.size())
            throw invalid_argument(fmt::format("{} returned a norm of {} values, not {}", who, src.size(), dst.size()));
        std::copy(src.begin(), src.end(), dst.begin());
    };
    for (std::size_t l = 0; l < layers; ++l) {
        put(m.mutable_rms_att(static_cast<int>(l)), n.rms_att[l]);
        put(m.mutable_rms_ffn(static_cast<int>(l)), n.rms_ffn[l]);
    }
    put(m.mutable_rms_final(), n.rms_final);
    if (!n.token_embedding.empty()) put(m.mutable_token_embedding(), n.token_embedding);
}

// Quantizes every linear layer of `m` (and the embedding when asked) with q at
// target bpw, in place; returns the row's bit count, weights and configs.
inline void quantize_model(llama2::model& m, const std::vector<std::vector<double>>& hessians, const method& q,
                           double target, bool embedding, unsigned threads, table_row& row,
                           const calibration_context& calibration = {}) {
    const std::vector<llama2::linear_ref> linears = m.linears();
    const std::size_t count = linears.size() + (embedding ? 1 : 0);
    std::vector<layer_solution> solutions(count);
    const auto dim = static_cast<std::size_t>(m.config().dim);
    const auto vocab = static_cast<std::size_t>(m.config().vocab_size);
    // The embedding is a lookup and, shared, the classifier; the classifier's input
    // is not collected, so it is quantized against H = I (plain error).
    std::vector<double> identity;
    if (embedding) {
        identity.assign(dim * dim, 0.0);
        for (std::size_t i = 0; i < dim; ++i) identity[i * dim + i] = 1.0;
    }
    const bool whole = q.quantize_all || q.quantize_calibrated;
    const unsigned inner = whole ? threads : std::max(1u, threads / static_cast<unsigned>(count));
    const auto problem = [&](std::size_t i) {
        layer_problem p;
        if (i < linears.size()) {
            p.name = linears[i].name;
            p.rows = static_cast<std::size_t>(linears[i].rows);
            p.cols = static_cast<std::size_t>(linears[i].cols);
            p.weights = linears[i].weights;
            p.hessian = hessians[i];
        } else {
            p.name = "token_embedding";
            p.rows = vocab;
            p.cols = dim;
            p.weights = m.token_embedding();
            p.hessian = identity;
        }
        p.threads = inner;
        return p;
    };
    const auto check = [&](const layer_problem& p, const layer_solution& s) {
        if (s.weights.size() != p.rows * p.cols)
            throw invalid_argument(
                fmt::format("{} returned {} weights for {} ({} x {})", q.name, s.weights.size(), p.name, p.rows, p.cols));
    };
    std::size_t shared_bits = 0;
    bool norms_refit = false;
    if (whole) {
        std::vector<layer_problem> problems;
        for (std::size_t i = 0; i < count; ++i) problems.push_back(problem(i));
        if (q.quantize_calibrated && (calibration.float_model == nullptr || calibration.sequences == nullptr))
            throw invalid_argument(fmt::format("{} needs the calibration context (float model, calibration set)", q.name));
        model_solution all = q.quantize_all ? q.quantize_all(problems, target)
                                            : q.quantize_calibrated(problems, target, calibration);
        if (all.layers.size() != count)
            throw invalid_argument(fmt::format("{} returned {} layers for {}", q.name, all.layers.size(), count));
        for (std::size_t i = 0; i < count; ++i) check(problems[i], all.layers[i]);
        solutions = std::move(all.layers);
        shared_bits = all.shared_bits;
        if (all.norms) {
            apply_norms(m, *all.norms, q.name);
            norms_refit = true;
        }
    } else {
        detail::parallel_for(count, threads, [&](std::size_t i) {
            const layer_problem p = problem(i);
            solutions[i] = q.quantize(p, target);
            check(p, solutions[i]);
        });
    }
    row.stored_bits = shared_bits;
    row.weights = 0;
    row.layer_configs.clear();
    for (std::size_t i = 0; i < count; ++i) {
        const std::span<float> dst = i < linears.size() ? linears[i].weights : m.mutable_token_embedding();
        std::copy(solutions[i].weights.begin(), solutions[i].weights.end(), dst.begin());
        row.stored_bits += solutions[i].stored_bits;
        row.weights += dst.size();
        row.layer_configs.push_back(
            fmt::format("{}: {}", i < linears.size() ? linears[i].name : "token_embedding", solutions[i].config));
    }
    if (norms_refit) row.layer_configs.push_back("norms: re-fitted (float, not stored bits)");
    row.bpw = static_cast<double>(row.stored_bits) / static_cast<double>(row.weights);
}

// The whole table: the float row, then for each target each method (and, with
// run_options::embedding, the same with the embedding quantized). on_row sees
// each row as it is finished (progress printing). Throws io_error /
// corrupt_data for missing or bad data files, invalid_argument for bad options
// or an unknown method name.
inline table run(const run_options& o, const std::vector<method>& methods,
                 const std::function<void(const table_row&)>& on_row = {}) {
    if (o.sequences < 1 || o.calibration_sequences < 1)
        throw invalid_argument(fmt::format("sequence counts must be >= 1 (evaluation {}, calibration {})",
                                           o.sequences, o.calibration_sequences));
    if (o.length < 2) throw invalid_argument(fmt::format("sequence length {} must be >= 2", o.length));
    if (!(o.calibration_temperature > 0.0f) || !std::isfinite(o.calibration_temperature))
        throw invalid_argument(
            fmt::format("calibration temperature {} must be finite and > 0", o.calibration_temperature));
    std::vector<const method*> chosen;
    for (const method& m : methods)
        if (o.methods.empty() || std::find(o.methods.begin(), o.methods.end(), m.name) != o.methods.end())
            chosen.push_back(&m);
    for (const std::string& name : o.methods)
        if (std::none_of(methods.begin(), methods.end(), [&](const method& m) { return m.name == name; }))
            throw invalid_argument(fmt::format("unknown method '{}'", name));

    const llama2::model float_model = llama2::model::load(o.data_dir / "stories260K.bin");
    const llama2::tokenizer tok = llama2::tokenizer::load(o.data_dir / "tok512.bin", float_model.config().vocab_size);
    const std::vector<std::string> documents = llama2::read_lines(o.data_dir / "tinystories_valid_sample.txt");

    table t;
    t.real_documents = documents.size();
    const reference_set real(float_model, llama2::encode_documents(tok, documents, float_model.config().seq_len),
                             o.threads);
    const reference_set sampled(float_model,
                                llama2::sample_sequences(float_model, o.sequences, o.length, o.seed, 1.0f), o.threads);
    const std::vector<std::vector<int>> calibration = disjoint_calibration(float_model, sampled.sequences(), o);
    for (const std::vector<int>& c : calibration)
        t.shared_sequences += static_cast<std::size_t>(
            std::count(sampled.sequences().begin(), sampled.sequences().end(), c));
    t.evaluation_positions = sampled.positions();
    t.calibration_tokens = calibration.size() * static_cast<std::size_t>(o.length);
    const std::vector<std::vector<double>> hessians = calibration_hessians(float_model, calibration, o.damping);

    const auto finish = [&](table_row& row, const llama2::model& m) {
        row.real = real.evaluate(m, o.threads);
        row.sampled = sampled.evaluate(m, o.threads);
        const table_row& reference = t.rows.empty() ? row : t.rows.front();
        row.rel_real = row.real.perplexity / reference.real.perplexity - 1.0;
        row.rel_sampled = row.sampled.perplexity / reference.sampled.perplexity - 1.0;
        t.rows.push_back(row);
        if (on_row) on_row(t.rows.back());
    };
    table_row float_row;
    float_row.method = "float";
    for (const llama2::linear_view& v : float_model.linears()) float_row.weights += v.weights.size();
    float_row.stored_bits = 32 * float_row.weights;
    finish(float_row, float_model);

    for (const double target : o.targets) {
        for (const bool embedding : {false, true}) {
            if (embedding && !o.embedding) continue;
            for (const method* q : chosen) {
                table_row row;
                row.method = q->name;
                row.target_bpw = target;
                row.embedding = embedding;
                llama2::model m = float_model;
                const auto t0 = std::chrono::steady_clock::now();
                quantize_model(m, hessians, *q, target, embedding, o.threads, row, {&float_model, &calibration, o.threads, o.damping});
                row.quantize_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                finish(row, m);
            }
        }
    }
    return t;
}

}  // namespace svq::model_eval
