// A whole-sequence forward pass of a llama2.c model that keeps its
// activations, and its exact backward pass: the gradient of the mean KL
// divergence of the model's next-token distributions from a teacher's (the
// float model's) with respect to every linear weight matrix and every RMSNorm
// weight, optionally the token embedding / classifier too. This is what
// fine-tuning a quantized model against the float model needs (the
// quantizer's reconstruction goes into a copy of the model through
// model::linears() / mutable_rms_*(), the gradient comes back here).
// docs/gradients.md has the formulas; tests/test_llama2_grad.cpp checks them
// against session::forward and against central finite differences.
//
// The forward pass is session::forward (llama2.hpp) for all positions of a
// sequence at once: RMSNorm with eps 1e-5f, RoPE from model::rope_cos() /
// rope_sin(), causal grouped-KV attention, SwiGLU, shared or separate
// classifier. The matrix products are whole-sequence GEMMs (Eigen) instead of
// one matrix-vector product per token, and the softmax and SiLU use Eigen's
// vectorised exp, so only rounding differs: the logits agree to 1.3e-6 of
// the logit scale on stories260K.
//
// Everything is templated on the scalar type T of the activations and
// gradients: float for fine-tuning, double for the finite-difference check.
// The weights are the model's floats (T = double converts them once per
// call); the log-softmax, the KL divergence and the loss are in double.
//
// Work is spread over sequences with std::thread; each thread has its own
// activations and its own gradient buffer, and per-sequence gradients are
// added to the total strictly in sequence order, so the result is
// bit-identical for every thread count.
#pragma once

#include <common/llama2.hpp>

#include <svq/error.hpp>

#include <fmt/format.h>
#include <svq/core/eigen.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <limits>
#include <mutex>
#include <span>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace svq::llama2 {

// Next-token distributions of a teacher on a set of sequences, as natural
// log-probabilities in double (a -inf entry is a token of probability 0).
struct teacher_distributions {
    int vocab_size = 0;
    // [sequence][(length - 1) * vocab_size], row-major: row p is the
    // distribution over the token at p + 1 given tokens 0..p. Sequences of
    // fewer than 2 tokens have no rows.
    std::vector<std::vector<double>> log_probs;
};

// d loss / d parameter, each shaped as the model tensor it belongs to.
template <class T>
struct parameter_gradients {
    std::vector<std::vector<T>> linears;  // [linear_count()], each rows * cols row-major, model::linear_infos() order
    std::vector<std::vector<T>> rms_att;  // [n_layers][dim]
    std::vector<std::vector<T>> rms_ffn;  // [n_layers][dim]
    std::vector<T> rms_final;             // [dim]
    // [vocab, dim], empty unless gradient_options::embedding. With a shared
    // classifier it holds both uses of the matrix (input lookup and classifier).
    std::vector<T> token_embedding;
    std::vector<T> classifier;  // [vocab, dim], only with gradient_options::embedding and a separate classifier
};

struct gradient_options {
    unsigned threads = 1;    // threads over sequences; 0: hardware concurrency
    bool embedding = false;  // also the token embedding / classifier gradient (normally frozen)
};

template <class T>
struct kl_gradient_result {
    double loss = 0.0;          // mean over positions of KL(teacher || model), nats
    std::size_t positions = 0;  // scored positions: sum over sequences of (length - 1)
    parameter_gradients<T> gradients;
};

namespace detail {

template <class T>
using row_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using column_vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <class T>
using const_row_map = Eigen::Map<const row_matrix<T>>;
template <class T>
using row_map = Eigen::Map<row_matrix<T>>;

// The model's weights and RoPE tables as T: views of the model's own floats
// for T = float, converted copies otherwise. The model must outlive it.
template <class T>
class typed_weights {
    static_assert(std::is_floating_point_v<T>, "activations and gradients are float or double");

public:
    explicit typed_weights(const model& m) : model_(&m) {
        const llama2::config& c = m.config();
        // Every tensor converted for T != float, reserved so the spans into them stay put.
        owned_.reserve(m.linear_count() + 2 * static_cast<std::size_t>(c.n_layers) + 5);
        for (const linear_view& linear : m.linears()) {
            linears_.push_back(adopt(linear.weights));
        }
        for (int l = 0; l < c.n_layers; ++l) {
            rms_att_.push_back(adopt(m.layer(l).rms_att));
            rms_ffn_.push_back(adopt(m.layer(l).rms_ffn));
        }
        rms_final_ = adopt(m.rms_final());
        token_embedding_ = adopt(m.token_embedding());
        classifier_ = c.shared_classifier ? token_embedding_ : adopt(m.classifier());
        rope_cos_ = adopt(m.rope_cos());
        rope_sin_ = adopt(m.rope_sin());
    }
    typed_weights(const typed_weights&) = delete;
    typed_weights& operator=(const typed_weights&) = delete;

    [[nodiscard]] const llama2::config& config() const noexcept { return model_->config(); }
    [[nodiscard]] const model& source() const noexcept { return *model_; }
    // Linear layer `kind` of block `layer` as a [rows, cols] row-major matrix.
    [[nodiscard]] const_row_map<T> linear(int layer, linear_kind kind) const noexcept {
        const std::size_t index = static_cast<std::size_t>(layer) * linears_per_layer + static_cast<std::size_t>(kind);
        const linear_info& info = model_->linear_infos()[index];
        return const_row_map<T>(linears_[index].data(), info.rows, info.cols);
    }
    [[nodiscard]] std::span<const T> rms_att(int layer) const noexcept {
        return rms_att_[static_cast<std::size_t>(layer)];
    }
    [[nodiscard]] std::span<const T> rms_ffn(int layer) const noexcept {
        return rms_ffn_[static_cast<std::size_t>(layer)];
    }
    [[nodiscard]] std::span<const T> rms_final() const noexcept { return rms_final_; }
    [[nodiscard]] std::span<const T> token_embedding() const noexcept { return token_embedding_; }
    [[nodiscard]] const_row_map<T> classifier() const noexcept {
        return const_row_map<T>(classifier_.data(), config().vocab_size, config().dim);
    }
    [[nodiscard]] std::span<const T> rope_cos() const noexcept { return rope_cos_; }
    [[nodiscard]] std::span<const T> rope_sin() const noexcept { return rope_sin_; }

private:
    std::span<const T> adopt(std::span<const float> values) {
        if constexpr (std::is_same_v<T, float>) {
            return values;
        } else {
            owned_.emplace_back(values.begin(), values.end());
            return owned_.back();
        }
    }

    const model* model_;
    std::vector<std::vector<T>> owned_;  // the converted tensors (T != float)
    std::vector<std::span<const T>> linears_;
    std::vector<std::span<const T>> rms_att_;
    std::vector<std::span<const T>> rms_ffn_;
    std::span<const T> rms_final_;
    std::span<const T> token_embedding_;
    std::span<const T> classifier_;
    std::span<const T> rope_cos_;
    std::span<const T> rope_sin_;
};

// run.c's RMSNorm on every row: out(t, :) = weight * x(t, :) * inv_rms(t),
// inv_rms(t) = 1 / sqrt(mean(x(t, :)^2) + eps), kept for the backward pass.
// eps is run.c's float 1e-5f in every T, so double computes the float model's function.
template <class T>
void rmsnorm_rows(row_matrix<T>& out, column_vector<T>& inv_rms, const row_matrix<T>& x, std::span<const T> weight) {
    const Eigen::Index rows = x.rows();
    const Eigen::Index cols = x.cols();
    out.resize(rows, cols);
    inv_rms.resize(rows);
    for (Eigen::Index t = 0; t < rows; ++t) {
        T sum_squares = 0;
        for (Eigen::Index j = 0; j < cols; ++j) {
            sum_squares += x(t, j) * x(t, j);
        }
        sum_squares /= static_cast<T>(cols);
        sum_squares += static_cast<T>(1e-5f);
        const T inv = T(1) / std::sqrt(sum_squares);
        inv_rms(t) = inv;
        for (Eigen::Index j = 0; j < cols; ++j) {
            out(t, j) = weight[static_cast<std::size_t>(j)] * (inv * x(t, j));
        }
    }
}

// Backward of rmsnorm_rows given dout = d loss / d out: adds d loss / d x to
// dx and assigns d loss / d weight to dweight. With r = inv_rms(t) and D = cols:
// dx_j += r w_j dout_j - (r^3 / D) x_j sum_k dout_k w_k x_k, dweight_j = sum_t dout_j r x_j.
template <class T>
void rmsnorm_rows_backward(const row_matrix<T>& x, const column_vector<T>& inv_rms, std::span<const T> weight,
                           const row_matrix<T>& dout, row_matrix<T>& dx, std::span<T> dweight) {
    const Eigen::Index rows = x.rows();
    const Eigen::Index cols = x.cols();
    std::fill(dweight.begin(), dweight.end(), T(0));
    for (Eigen::Index t = 0; t < rows; ++t) {
        const T r = inv_rms(t);
        T dot = 0;
        for (Eigen::Index j = 0; j < cols; ++j) {
            const auto jj = static_cast<std::size_t>(j);
            dot += dout(t, j) * weight[jj] * x(t, j);
            dweight[jj] += dout(t, j) * (r * x(t, j));
        }
        const T coefficient = r * r * r * dot / static_cast<T>(cols);
        for (Eigen::Index j = 0; j < cols; ++j) {
            dx(t, j) += r * weight[static_cast<std::size_t>(j)] * dout(t, j) - coefficient * x(t, j);
        }
    }
}

// run.c's RoPE on every head of every row, row t rotated by position t's
// angles (cosines, sines: [seq_len, head_size / 2]); `inverse` applies the
// transposed rotation, which maps the gradient of the rotated values back.
template <class T>
void rope_rows(row_matrix<T>& m, std::span<const T> cosines, std::span<const T> sines, int head_size, bool inverse) {
    const auto half_head = static_cast<std::size_t>(head_size / 2);
    const auto hs = static_cast<Eigen::Index>(head_size);
    for (Eigen::Index t = 0; t < m.rows(); ++t) {
        const std::size_t row = static_cast<std::size_t>(t) * half_head;
        for (Eigen::Index i = 0; i < m.cols(); i += 2) {
            const std::size_t pair = static_cast<std::size_t>((i % hs) / 2);
            const T fcr = cosines[row + pair];
            const T fci = inverse ? -sines[row + pair] : sines[row + pair];
            const T v0 = m(t, i);
            const T v1 = m(t, i + 1);
            m(t, i) = v0 * fcr - v1 * fci;
            m(t, i + 1) = v0 * fci + v1 * fcr;
        }
    }
}

// Log-softmax of one row of logits in double (as compare_models computes
// it), the same arithmetic for teacher and student so that a model against
// its own teacher gives KL exactly 0. out: logits.size() doubles.
template <class Row>
void log_softmax(const Row& logits, std::span<double> out) {
    const auto z = logits.template cast<double>().array();
    const double max_logit = z.maxCoeff();
    const double log_z = max_logit + std::log((z - max_logit).exp().sum());
    Eigen::Map<Eigen::ArrayXd>(out.data(), logits.size()) = z - log_z;
}

// The activations of one sequence that the backward pass needs, and the
// buffers it runs in; one per thread, reused across sequences.
template <class T>
class sequence_pass {
public:
    explicit sequence_pass(const typed_weights<T>& weights) : weights_(&weights) {
        const llama2::config& c = weights.config();
        x_.resize(static_cast<std::size_t>(c.n_layers) + 1);
        layers_.resize(static_cast<std::size_t>(c.n_layers));
        for (layer_cache& a : layers_) {
            a.attention.resize(static_cast<std::size_t>(c.n_heads));
        }
    }

    // Runs `tokens` at positions 0..n-1 (in range, n <= seq_len: the caller
    // checks) and keeps every activation; logits() is then [n, vocab].
    void forward(std::span<const int> tokens) {
        const typed_weights<T>& w = *weights_;
        const llama2::config& c = w.config();
        const auto n = static_cast<Eigen::Index>(tokens.size());
        const Eigen::Index dim = c.dim;
        const Eigen::Index head_size = c.head_size();
        const T inv_sqrt_head = T(1) / std::sqrt(static_cast<T>(head_size));
        tokens_.assign(tokens.begin(), tokens.end());

        const std::span<const T> embedding = w.token_embedding();
        x_[0].resize(n, dim);
        for (Eigen::Index t = 0; t < n; ++t) {
            const std::size_t offset = static_cast<std::size_t>(tokens[static_cast<std::size_t>(t)]) * c.dim;
            for (Eigen::Index j = 0; j < dim; ++j) {
                x_[0](t, j) = embedding[offset + static_cast<std::size_t>(j)];
            }
        }
        for (int l = 0; l < c.n_layers; ++l) {
            layer_cache& a = layers_[static_cast<std::size_t>(l)];
            const row_matrix<T>& x = x_[static_cast<std::size_t>(l)];
            rmsnorm_rows(a.xn_att, a.inv_rms_att, x, w.rms_att(l));
            a.q.noalias() = a.xn_att * w.linear(l, linear_kind::wq).transpose();
            a.k.noalias() = a.xn_att * w.linear(l, linear_kind::wk).transpose();
            a.v.noalias() = a.xn_att * w.linear(l, linear_kind::wv).transpose();
            rope_rows(a.q, w.rope_cos(), w.rope_sin(), c.head_size(), false);
            rope_rows(a.k, w.rope_cos(), w.rope_sin(), c.head_size(), false);

            // Causal attention; query head h reads key/value head h / kv_group.
            // attention[h](t, s) = softmax over s <= t of q_t . k_s / sqrt(head_size). Only the
            // lower triangle is computed, stored and read (triangular products: half the work).
            a.att.resize(n, dim);
            for (int h = 0; h < c.n_heads; ++h) {
                const Eigen::Index q_col = h * head_size;
                const Eigen::Index kv_col = (h / c.kv_group()) * head_size;
                row_matrix<T>& p = a.attention[static_cast<std::size_t>(h)];
                p.resize(n, n);
                zero_lower(p);
                p.template triangularView<Eigen::Lower>() +=
                    a.q.middleCols(q_col, head_size) * a.k.middleCols(kv_col, head_size).transpose();
                for (Eigen::Index t = 0; t < n; ++t) {
                    auto scores = p.row(t).head(t + 1);
                    scores *= inv_sqrt_head;
                    const T max_score = scores.maxCoeff();
                    scores = (scores.array() - max_score).exp().matrix();
                    scores /= scores.sum();
                }
                a.att.middleCols(q_col, head_size).noalias() =
                    p.template triangularView<Eigen::Lower>() * a.v.middleCols(kv_col, head_size);
            }
            a.x_mid = x;
            a.x_mid.noalias() += a.att * w.linear(l, linear_kind::wo).transpose();

            // SwiGLU feed-forward: w2(silu(w1 x) * w3 x).
            rmsnorm_rows(a.xn_ffn, a.inv_rms_ffn, a.x_mid, w.rms_ffn(l));
            a.h1.noalias() = a.xn_ffn * w.linear(l, linear_kind::w1).transpose();
            a.h3.noalias() = a.xn_ffn * w.linear(l, linear_kind::w3).transpose();
            a.sigmoid = (T(1) + (-a.h1.array()).exp()).inverse().matrix();
            a.gated = (a.h1.array() * a.sigmoid.array() * a.h3.array()).matrix();
            row_matrix<T>& next = x_[static_cast<std::size_t>(l) + 1];
            next = a.x_mid;
            next.noalias() += a.gated * w.linear(l, linear_kind::w2).transpose();
        }
        rmsnorm_rows(xn_final_, inv_rms_final_, x_.back(), w.rms_final());
        logits_.noalias() = xn_final_ * w.classifier().transpose();
    }

    [[nodiscard]] const row_matrix<T>& logits() const noexcept { return logits_; }
    // d loss / d logits [n, vocab], filled by the caller between forward and backward.
    [[nodiscard]] row_matrix<T>& logit_gradient() noexcept { return dlogits_; }

    // This sequence's gradient from logit_gradient(): assigns every tensor of
    // g (shaped by zero_gradients; token_embedding and classifier only when
    // they are not empty).
    void backward(parameter_gradients<T>& g) {
        const typed_weights<T>& w = *weights_;
        const llama2::config& c = w.config();
        const Eigen::Index n = logits_.rows();
        const Eigen::Index head_size = c.head_size();
        const T inv_sqrt_head = T(1) / std::sqrt(static_cast<T>(head_size));
        const bool embedding = !g.token_embedding.empty();
        auto gradient_of = [&](int layer, linear_kind kind) {
            const std::size_t index =
                static_cast<std::size_t>(layer) * linears_per_layer + static_cast<std::size_t>(kind);
            const linear_info& info = w.source().linear_infos()[index];
            return row_map<T>(g.linears[index].data(), info.rows, info.cols);
        };

        // logits = xn_final C^T.
        dxn_.noalias() = dlogits_ * w.classifier();
        if (embedding) {
            std::vector<T>& dc = c.shared_classifier ? g.token_embedding : g.classifier;
            row_map<T>(dc.data(), c.vocab_size, c.dim).noalias() = dlogits_.transpose() * xn_final_;
            if (!c.shared_classifier) {
                std::fill(g.token_embedding.begin(), g.token_embedding.end(), T(0));
            }
        }
        dx_.setZero(n, c.dim);
        rmsnorm_rows_backward(x_.back(), inv_rms_final_, w.rms_final(), dxn_, dx_, std::span<T>(g.rms_final));

        // dx_ holds d loss / d (residual stream) after the block being undone.
        for (int l = c.n_layers - 1; l >= 0; --l) {
            const layer_cache& a = layers_[static_cast<std::size_t>(l)];
            // x[l + 1] = x_mid + gated w2^T, gated = silu(h1) * h3, silu'(v) = s (1 + v (1 - s)).
            dgated_.noalias() = dx_ * w.linear(l, linear_kind::w2);
            gradient_of(l, linear_kind::w2).noalias() = dx_.transpose() * a.gated;
            dh3_ = (dgated_.array() * a.h1.array() * a.sigmoid.array()).matrix();
            dh1_ = (dgated_.array() * a.h3.array() * a.sigmoid.array() *
                    (T(1) + a.h1.array() * (T(1) - a.sigmoid.array())))
                       .matrix();
            dxn_.noalias() = dh1_ * w.linear(l, linear_kind::w1);
            dxn_.noalias() += dh3_ * w.linear(l, linear_kind::w3);
            gradient_of(l, linear_kind::w1).noalias() = dh1_.transpose() * a.xn_ffn;
            gradient_of(l, linear_kind::w3).noalias() = dh3_.transpose() * a.xn_ffn;
            rmsnorm_rows_backward(a.x_mid, a.inv_rms_ffn, w.rms_ffn(l), dxn_, dx_,
                                  std::span<T>(g.rms_ffn[static_cast<std::size_t>(l)]));

            // x_mid = x[l] + att wo^T.
            datt_.noalias() = dx_ * w.linear(l, linear_kind::wo);
            gradient_of(l, linear_kind::wo).noalias() = dx_.transpose() * a.att;
            dq_.resize(n, c.dim);
            dk_.setZero(n, c.kv_dim());
            dv_.setZero(n, c.kv_dim());
            for (int h = 0; h < c.n_heads; ++h) {
                const Eigen::Index q_col = h * head_size;
                const Eigen::Index kv_col = (h / c.kv_group()) * head_size;
                const auto p = a.attention[static_cast<std::size_t>(h)].template triangularView<Eigen::Lower>();
                const auto dout = datt_.middleCols(q_col, head_size);
                dv_.middleCols(kv_col, head_size).noalias() += p.transpose() * dout;
                // Softmax backward: d score(t, s) = p(t, s) (dp(t, s) - sum_u p(t, u) dp(t, u)),
                // times the 1 / sqrt(head_size) of the scores; lower triangles only, as in forward.
                dp_.resize(n, n);
                zero_lower(dp_);
                dp_.template triangularView<Eigen::Lower>() += dout * a.v.middleCols(kv_col, head_size).transpose();
                for (Eigen::Index t = 0; t < n; ++t) {
                    const auto weights = a.attention[static_cast<std::size_t>(h)].row(t).head(t + 1);
                    auto d = dp_.row(t).head(t + 1);
                    const T dot = weights.dot(d);
                    d.array() = weights.array() * (d.array() - dot) * inv_sqrt_head;
                }
                const auto dscores = std::as_const(dp_).template triangularView<Eigen::Lower>();
                dq_.middleCols(q_col, head_size).noalias() = dscores * a.k.middleCols(kv_col, head_size);
                dk_.middleCols(kv_col, head_size).noalias() += dscores.transpose() * a.q.middleCols(q_col, head_size);
            }
            rope_rows(dq_, w.rope_cos(), w.rope_sin(), c.head_size(), true);
            rope_rows(dk_, w.rope_cos(), w.rope_sin(), c.head_size(), true);
            dxn_.noalias() = dq_ * w.linear(l, linear_kind::wq);
            dxn_.noalias() += dk_ * w.linear(l, linear_kind::wk);
            dxn_.noalias() += dv_ * w.linear(l, linear_kind::wv);
            gradient_of(l, linear_kind::wq).noalias() = dq_.transpose() * a.xn_att;
            gradient_of(l, linear_kind::wk).noalias() = dk_.transpose() * a.xn_att;
            gradient_of(l, linear_kind::wv).noalias() = dv_.transpose() * a.xn_att;
            rmsnorm_rows_backward(x_[static_cast<std::size_t>(l)], a.inv_rms_att, w.rms_att(l), dxn_, dx_,
                                  std::span<T>(g.rms_att[static_cast<std::size_t>(l)]));
        }
        if (embedding) {
            // x[0](t, :) = token_embedding(tokens[t], :).
            for (Eigen::Index t = 0; t < n; ++t) {
                T* row = g.token_embedding.data() + static_cast<std::size_t>(tokens_[static_cast<std::size_t>(t)]) *
                                                        static_cast<std::size_t>(c.dim);
                for (Eigen::Index j = 0; j < c.dim; ++j) {
                    row[j] += dx_(t, j);
                }
            }
        }
    }

private:
    // Zeroes the lower triangle row by row. Assigning a product to a
    // triangularView zeroes it column by column first (strided on a row-major
    // matrix: it was 40% of the forward pass), so products are added to this.
    static void zero_lower(row_matrix<T>& m) noexcept {
        for (Eigen::Index t = 0; t < m.rows(); ++t) {
            m.row(t).head(t + 1).setZero();
        }
    }

    // One block's activations, [n, .] with row t for position t.
    struct layer_cache {
        column_vector<T> inv_rms_att;          // 1 / rms of the block's input rows
        row_matrix<T> xn_att;                  // [n, dim] normed input: the input of wq, wk, wv
        row_matrix<T> q;                       // [n, dim] queries after RoPE
        row_matrix<T> k;                       // [n, kv_dim] keys after RoPE
        row_matrix<T> v;                       // [n, kv_dim]
        std::vector<row_matrix<T>> attention;  // [n_heads] of [n, n] softmax weights, lower triangle only
        row_matrix<T> att;                     // [n, dim] attention output: the input of wo
        row_matrix<T> x_mid;                   // [n, dim] residual stream after attention
        column_vector<T> inv_rms_ffn;          // 1 / rms of x_mid's rows
        row_matrix<T> xn_ffn;                  // [n, dim] the input of w1, w3
        row_matrix<T> h1;                      // [n, hidden] w1 output, before the gate
        row_matrix<T> h3;                      // [n, hidden] w3 output
        row_matrix<T> sigmoid;                 // [n, hidden] 1 / (1 + exp(-h1)): silu(h1) = h1 sigmoid
        row_matrix<T> gated;                   // [n, hidden] silu(h1) * h3: the input of w2
    };

    const typed_weights<T>* weights_;
    std::vector<int> tokens_;
    std::vector<row_matrix<T>> x_;     // [n_layers + 1] of [n, dim]: residual stream entering block l; last: final
    std::vector<layer_cache> layers_;  // [n_layers]
    column_vector<T> inv_rms_final_;
    row_matrix<T> xn_final_;  // [n, dim] the classifier's input
    row_matrix<T> logits_;    // [n, vocab]
    // Backward buffers.
    row_matrix<T> dlogits_;  // [n, vocab]
    row_matrix<T> dx_;       // [n, dim]
    row_matrix<T> dxn_;      // [n, dim]
    row_matrix<T> datt_;     // [n, dim]
    row_matrix<T> dq_;       // [n, dim]
    row_matrix<T> dk_;       // [n, kv_dim]
    row_matrix<T> dv_;       // [n, kv_dim]
    row_matrix<T> dp_;       // [n, n]
    row_matrix<T> dgated_;   // [n, hidden]
    row_matrix<T> dh1_;      // [n, hidden]
    row_matrix<T> dh3_;      // [n, hidden]
};

// Gradients shaped for the model, all zero.
template <class T>
[[nodiscard]] parameter_gradients<T> zero_gradients(const model& m, bool embedding) {
    const llama2::config& c = m.config();
    const auto dim = static_cast<std::size_t>(c.dim);
    parameter_gradients<T> g;
    for (const linear_info& info : m.linear_infos()) {
        g.linears.emplace_back(static_cast<std::size_t>(info.rows) * static_cast<std::size_t>(info.cols), T(0));
    }
    g.rms_att.assign(static_cast<std::size_t>(c.n_layers), std::vector<T>(dim, T(0)));
    g.rms_ffn.assign(static_cast<std::size_t>(c.n_layers), std::vector<T>(dim, T(0)));
    g.rms_final.assign(dim, T(0));
    if (embedding) {
        g.token_embedding.assign(static_cast<std::size_t>(c.vocab_size) * dim, T(0));
        if (!c.shared_classifier) {
            g.classifier.assign(g.token_embedding.size(), T(0));
        }
    }
    return g;
}

// total += part, tensor by tensor (same shapes).
template <class T>
void add_gradients(parameter_gradients<T>& total, const parameter_gradients<T>& part) noexcept {
    auto add = [](std::vector<T>& to, const std::vector<T>& from) {
        for (std::size_t i = 0; i < to.size(); ++i) {
            to[i] += from[i];
        }
    };
    for (std::size_t i = 0; i < total.linears.size(); ++i) {
        add(total.linears[i], part.linears[i]);
    }
    for (std::size_t l = 0; l < total.rms_att.size(); ++l) {
        add(total.rms_att[l], part.rms_att[l]);
        add(total.rms_ffn[l], part.rms_ffn[l]);
    }
    add(total.rms_final, part.rms_final);
    add(total.token_embedding, part.token_embedding);
    add(total.classifier, part.classifier);
}

inline void check_tokens(const model& m, std::span<const int> tokens) {
    const llama2::config& c = m.config();
    if (tokens.size() > static_cast<std::size_t>(c.seq_len)) {
        throw invalid_argument(fmt::format("sequence has {} tokens, more than seq_len {}", tokens.size(), c.seq_len));
    }
    for (std::size_t t = 0; t < tokens.size(); ++t) {
        if (tokens[t] < 0 || tokens[t] >= c.vocab_size) {
            throw invalid_argument(fmt::format("token {} at position {} outside [0, {})", tokens[t], t, c.vocab_size));
        }
    }
}

[[nodiscard]] inline std::size_t scored_positions(const std::vector<int>& sequence) noexcept {
    return sequence.empty() ? 0 : sequence.size() - 1;
}

inline void check_teacher(const model& m, const std::vector<std::vector<int>>& sequences,
                          const teacher_distributions& teacher) {
    const int vocab = m.config().vocab_size;
    if (teacher.vocab_size != vocab) {
        throw invalid_argument(
            fmt::format("teacher vocab_size {} differs from the model's vocab_size {}", teacher.vocab_size, vocab));
    }
    if (teacher.log_probs.size() != sequences.size()) {
        throw invalid_argument(
            fmt::format("teacher has {} sequences, the batch {}", teacher.log_probs.size(), sequences.size()));
    }
    const auto v = static_cast<std::size_t>(vocab);
    for (std::size_t s = 0; s < sequences.size(); ++s) {
        const std::size_t positions = scored_positions(sequences[s]);
        const std::vector<double>& log_probs = teacher.log_probs[s];
        if (log_probs.size() != positions * v) {
            throw invalid_argument(fmt::format(
                "teacher sequence {} has {} log-probabilities, expected {} ({} tokens: {} positions x vocab {})", s,
                log_probs.size(), positions * v, sequences[s].size(), positions, vocab));
        }
        for (std::size_t i = 0; i < log_probs.size(); ++i) {
            if (std::isnan(log_probs[i]) || log_probs[i] == std::numeric_limits<double>::infinity()) {
                throw invalid_argument(fmt::format("teacher sequence {} position {} token {}: log-probability {}", s,
                                                   i / v, i % v, log_probs[i]));
            }
        }
    }
}

// Per-thread buffers of kl_rows, [vocab] each.
struct kl_scratch {
    Eigen::ArrayXd log_q;  // the model's log-probabilities
    Eigen::ArrayXd p;      // the teacher's probabilities
    Eigen::ArrayXd q;      // the model's probabilities
};

// Sum over rows of KL(teacher row || softmax(logits row)) in double. With
// dlogits, also its gradient scaled by 1 / total_positions (the loss is the
// mean over every position of the batch): with P the teacher and Q the
// model's softmax, d KL / d logit_j = Q_j sum_i P_i - P_j (sum_i P_i = 1 up
// to rounding; kept so the gradient is that of the KL as computed).
template <class T>
double kl_rows(const row_matrix<T>& logits, std::span<const double> teacher_log_probs, std::size_t total_positions,
               row_matrix<T>* dlogits, kl_scratch& scratch) {
    const Eigen::Index vocab = logits.cols();
    scratch.log_q.resize(vocab);
    if (dlogits != nullptr) {
        dlogits->resize(logits.rows(), vocab);
    }
    const double scale = 1.0 / static_cast<double>(total_positions);
    constexpr double minus_infinity = -std::numeric_limits<double>::infinity();
    double total = 0.0;
    for (Eigen::Index row = 0; row < logits.rows(); ++row) {
        log_softmax(logits.row(row), std::span<double>(scratch.log_q.data(), static_cast<std::size_t>(vocab)));
        const Eigen::Map<const Eigen::ArrayXd> log_p(teacher_log_probs.data() + row * vocab, vocab);
        // 0 log 0 = 0: a -inf log-probability is a probability of exactly 0
        // (Eigen's vectorised exp leaves 1e-308 there).
        scratch.p = (log_p == minus_infinity).select(0.0, log_p.exp());
        double kl = 0.0;
        for (Eigen::Index i = 0; i < vocab; ++i) {
            if (scratch.p(i) > 0.0) {
                kl += scratch.p(i) * (log_p(i) - scratch.log_q(i));
            }
        }
        total += kl;
        if (dlogits != nullptr) {
            const double mass = scratch.p.sum();
            scratch.q = scratch.log_q.exp();
            dlogits->row(row) = ((mass * scratch.q - scratch.p) * scale).template cast<T>().matrix().transpose();
        }
    }
    return total;
}

// Runs work(state, i) for i in [0, count) on up to `threads` threads (0:
// hardware concurrency), each thread with its own state from make_state(),
// and merge(state, i) right after work(state, i) but strictly in index order
// (under a lock), so whatever merge accumulates does not depend on the
// thread count. Rethrows the first exception after every thread stops.
template <class MakeState, class Work, class Merge>
void ordered_parallel(std::size_t count, unsigned threads, MakeState&& make_state, Work&& work, Merge&& merge) {
    if (threads == 0) {
        threads = std::max(1u, std::thread::hardware_concurrency());
    }
    const std::size_t workers = std::min<std::size_t>(threads, count);
    std::atomic<std::size_t> next{0};
    std::mutex mutex;
    std::condition_variable turn;
    std::size_t merged = 0;  // indices [0, merged) are merged
    bool failed = false;
    std::exception_ptr failure;
    const auto run = [&] {
        try {
            auto state = make_state();
            // Indices are claimed in increasing order, so the one a thread
            // waits for is held by a thread that will merge it or fail.
            for (std::size_t i = next++; i < count; i = next++) {
                work(state, i);
                std::unique_lock lock(mutex);
                turn.wait(lock, [&] { return merged == i || failed; });
                if (failed) {
                    return;
                }
                merge(state, i);
                ++merged;
                lock.unlock();
                turn.notify_all();
            }
        } catch (...) {
            {
                const std::lock_guard lock(mutex);
                if (!failure) {
                    failure = std::current_exception();
                }
                failed = true;
            }
            next = count;
            turn.notify_all();
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(workers);
    for (std::size_t t = 1; t < workers; ++t) {
        pool.emplace_back(run);
    }
    run();
    for (std::thread& t : pool) {
        t.join();
    }
    if (failure) {
        std::rethrow_exception(failure);
    }
}

}  // namespace detail

// The logits of every position of one sequence, [tokens.size(), vocab]
// row-major: row p is what session::forward(tokens[p], p) returns after
// positions 0..p-1 (equal to rounding). Throws invalid_argument for more
// than seq_len tokens or a token outside [0, vocab_size).
template <class T = float>
[[nodiscard]] std::vector<T> forward_sequence(const model& m, std::span<const int> tokens) {
    detail::check_tokens(m, tokens);
    if (tokens.empty()) {
        return {};
    }
    const detail::typed_weights<T> weights(m);
    detail::sequence_pass<T> pass(weights);
    pass.forward(tokens);
    const detail::row_matrix<T>& logits = pass.logits();
    return std::vector<T>(logits.data(), logits.data() + logits.size());
}

// The teacher distributions of model m on the sequences: at every position
// p < length - 1, log softmax of forward_sequence<T>'s logits in double.
// kl_loss<T> of the same model against it is exactly 0.
template <class T = float>
[[nodiscard]] teacher_distributions make_teacher(const model& m, const std::vector<std::vector<int>>& sequences,
                                                 unsigned threads = 1) {
    detail::check_sequences(m, sequences);
    const detail::typed_weights<T> weights(m);
    const auto vocab = static_cast<std::size_t>(m.config().vocab_size);
    teacher_distributions teacher;
    teacher.vocab_size = m.config().vocab_size;
    teacher.log_probs.resize(sequences.size());
    detail::ordered_parallel(
        sequences.size(), threads, [&] { return detail::sequence_pass<T>(weights); },
        [&](detail::sequence_pass<T>& pass, std::size_t s) {
            const std::vector<int>& sequence = sequences[s];
            const std::size_t positions = detail::scored_positions(sequence);
            std::vector<double>& out = teacher.log_probs[s];
            out.resize(positions * vocab);
            if (positions == 0) {
                return;
            }
            pass.forward(std::span<const int>(sequence).first(positions));
            for (std::size_t p = 0; p < positions; ++p) {
                detail::log_softmax(pass.logits().row(static_cast<Eigen::Index>(p)),
                                    std::span<double>(out).subspan(p * vocab, vocab));
            }
        },
        [](const detail::sequence_pass<T>&, std::size_t) {});
    return teacher;
}

// The loss alone (forward passes only): mean over every scored position p
// (predicting token p + 1) of every sequence of KL(teacher_p ||
// softmax(logits_p)), nats; 0 when no sequence has 2 tokens. The positions
// and the definition are compare_models' mean_kl, without its clamp of each
// position's KL at 0 (the loss stays differentiable; rounding can leave
// -1e-17 at a position where the distributions agree).
template <class T = float>
[[nodiscard]] double kl_loss(const model& m, const std::vector<std::vector<int>>& sequences,
                             const teacher_distributions& teacher, unsigned threads = 1) {
    detail::check_sequences(m, sequences);
    detail::check_teacher(m, sequences, teacher);
    std::size_t positions = 0;
    for (const std::vector<int>& sequence : sequences) {
        positions += detail::scored_positions(sequence);
    }
    if (positions == 0) {
        return 0.0;
    }
    const detail::typed_weights<T> weights(m);
    std::vector<double> sequence_kl(sequences.size(), 0.0);
    struct worker {
        detail::sequence_pass<T> pass;
        detail::kl_scratch kl;
    };
    detail::ordered_parallel(
        sequences.size(), threads,
        [&] {
            return worker{detail::sequence_pass<T>(weights), {}};
        },
        [&](worker& w, std::size_t s) {
            const std::vector<int>& sequence = sequences[s];
            const std::size_t n = detail::scored_positions(sequence);
            if (n > 0) {
                w.pass.forward(std::span<const int>(sequence).first(n));
                sequence_kl[s] = detail::kl_rows<T>(w.pass.logits(), teacher.log_probs[s], positions, nullptr, w.kl);
            }
        },
        [](const worker&, std::size_t) {});
    double total = 0.0;
    for (const double kl : sequence_kl) {
        total += kl;
    }
    return total / static_cast<double>(positions);
}

// The loss of kl_loss and its gradient with respect to every linear weight
// matrix and RMSNorm weight of m (and the token embedding / classifier with
// options.embedding). The per-sequence gradients are summed in sequence
// order: bit-identical results for every options.threads. Throws
// invalid_argument for a sequence longer than seq_len, a token outside the
// vocabulary, or a teacher whose vocabulary, sequence count or row count
// (length - 1 per sequence) does not match, or that holds NaN or +inf.
template <class T = float>
[[nodiscard]] kl_gradient_result<T> kl_loss_gradients(const model& m, const std::vector<std::vector<int>>& sequences,
                                                      const teacher_distributions& teacher,
                                                      const gradient_options& options = {}) {
    detail::check_sequences(m, sequences);
    detail::check_teacher(m, sequences, teacher);
    kl_gradient_result<T> result;
    for (const std::vector<int>& sequence : sequences) {
        result.positions += detail::scored_positions(sequence);
    }
    result.gradients = detail::zero_gradients<T>(m, options.embedding);
    if (result.positions == 0) {
        return result;
    }
    const detail::typed_weights<T> weights(m);
    std::vector<double> sequence_kl(sequences.size(), 0.0);
    struct worker {
        detail::sequence_pass<T> pass;
        parameter_gradients<T> gradients;  // of the sequence just run
        detail::kl_scratch kl;
    };
    detail::ordered_parallel(
        sequences.size(), options.threads,
        [&] {
            return worker{detail::sequence_pass<T>(weights), detail::zero_gradients<T>(m, options.embedding), {}};
        },
        [&](worker& w, std::size_t s) {
            const std::vector<int>& sequence = sequences[s];
            const std::size_t n = detail::scored_positions(sequence);
            if (n > 0) {
                w.pass.forward(std::span<const int>(sequence).first(n));
                sequence_kl[s] = detail::kl_rows<T>(w.pass.logits(), teacher.log_probs[s], result.positions,
                                                    &w.pass.logit_gradient(), w.kl);
                w.pass.backward(w.gradients);
            }
        },
        [&](const worker& w, std::size_t s) {
            if (detail::scored_positions(sequences[s]) > 0) {
                detail::add_gradients(result.gradients, w.gradients);
            }
        });
    double total = 0.0;
    for (const double kl : sequence_kl) {
        total += kl;
    }
    result.loss = total / static_cast<double>(result.positions);
    return result;
}

}  // namespace svq::llama2
