// An exact float32 port of llama2.c's inference path (karpathy/llama2.c run.c):
// the legacy checkpoint loader, the transformer forward pass with a KV cache,
// the BPE tokenizer, and the evaluation metrics svq uses to judge quantized
// models (real-text perplexity, KL divergence and top-1 agreement against the
// float model on sampled sequences). It also exposes every linear layer for
// in-place replacement and a hook that sees each linear layer's input, which
// is what Hessian (GPTQ-style) calibration needs.
//
// Numerics follow run.c: float32 everywhere in the forward pass, RMSNorm with
// eps 1e-5, RoPE computed from pos / 10000^(i / head_size) (the checkpoint's
// stored freq_cis tables are read and kept but not used, as in run.c),
// grouped KV heads, SwiGLU feed-forward. Only the summation order of the
// matrix-vector products differs (Eigen vectorises them), which moves logits
// by float rounding only. Log-likelihoods and divergences are accumulated in
// double. See docs/evaluation.md for the protocol and the reference figures.
#pragma once

#include <svq/error.hpp>

#include <fmt/format.h>
#include <svq/core/eigen.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace svq::llama2 {

// The seven int32 of a llama2.c legacy checkpoint header. A negative
// vocab_size in the file means the classifier is stored separately; here
// vocab_size is always positive and shared_classifier says which it is.
struct config {
    int dim = 0;
    int hidden_dim = 0;
    int n_layers = 0;
    int n_heads = 0;
    int n_kv_heads = 0;
    int vocab_size = 0;
    int seq_len = 0;
    bool shared_classifier = true;

    [[nodiscard]] int head_size() const noexcept { return dim / n_heads; }
    [[nodiscard]] int kv_dim() const noexcept { return dim / n_heads * n_kv_heads; }
    // Query heads that share one key/value head.
    [[nodiscard]] int kv_group() const noexcept { return n_heads / n_kv_heads; }
};

// Special token ids of the llama2.c / sentencepiece vocabularies.
inline constexpr int bos_token = 1;
inline constexpr int eos_token = 2;

// The seven linear layers of a transformer block, in the order they run.
enum class linear_kind { wq, wk, wv, wo, w1, w2, w3 };
inline constexpr std::size_t linears_per_layer = 7;
inline constexpr std::array<linear_kind, linears_per_layer> all_linear_kinds = {
    linear_kind::wq, linear_kind::wk, linear_kind::wv, linear_kind::wo,
    linear_kind::w1, linear_kind::w2, linear_kind::w3};

[[nodiscard]] constexpr std::string_view to_string(linear_kind kind) noexcept {
    switch (kind) {
        case linear_kind::wq:
            return "wq";
        case linear_kind::wk:
            return "wk";
        case linear_kind::wv:
            return "wv";
        case linear_kind::wo:
            return "wo";
        case linear_kind::w1:
            return "w1";
        case linear_kind::w2:
            return "w2";
        case linear_kind::w3:
            return "w3";
    }
    return "?";
}

// The Hugging Face Llama name of linear layer (layer, kind), as
// scripts/convert_stories260k.py writes it (models/stories260K/README.md).
[[nodiscard]] inline std::string hf_linear_name(int layer, linear_kind kind) {
    const char* suffix = "";
    switch (kind) {
        case linear_kind::wq: suffix = "self_attn.q_proj"; break;
        case linear_kind::wk: suffix = "self_attn.k_proj"; break;
        case linear_kind::wv: suffix = "self_attn.v_proj"; break;
        case linear_kind::wo: suffix = "self_attn.o_proj"; break;
        case linear_kind::w1: suffix = "mlp.gate_proj"; break;
        case linear_kind::w2: suffix = "mlp.down_proj"; break;
        case linear_kind::w3: suffix = "mlp.up_proj"; break;
    }
    return fmt::format("model.layers.{}.{}.weight", layer, suffix);
}

// Identity and shape of one linear layer y = W x, W stored [rows, cols] row-major.
struct linear_info {
    std::string name;  // "layers.3.w2"
    int layer = 0;     // block index
    linear_kind kind = linear_kind::wq;
    int rows = 0;           // outputs
    int cols = 0;           // inputs
    std::size_t index = 0;  // position in model::linears(): layer * 7 + kind
};

// A linear layer whose weights may be overwritten in place (by a quantizer).
struct linear_ref : linear_info {
    std::span<float> weights;  // rows * cols, row-major
};

// Read-only view of a linear layer.
struct linear_view : linear_info {
    std::span<const float> weights;  // rows * cols, row-major
};

// Weights of one transformer block; each matrix is [out, in] row-major.
struct layer_weights {
    std::vector<float> rms_att;  // [dim]
    std::vector<float> wq;       // [dim, dim]
    std::vector<float> wk;       // [kv_dim, dim]
    std::vector<float> wv;       // [kv_dim, dim]
    std::vector<float> wo;       // [dim, dim]
    std::vector<float> rms_ffn;  // [dim]
    std::vector<float> w1;       // [hidden, dim]
    std::vector<float> w2;       // [dim, hidden]
    std::vector<float> w3;       // [hidden, dim]

    [[nodiscard]] std::vector<float>& linear(linear_kind kind) noexcept {
        switch (kind) {
            case linear_kind::wq:
                return wq;
            case linear_kind::wk:
                return wk;
            case linear_kind::wv:
                return wv;
            case linear_kind::wo:
                return wo;
            case linear_kind::w1:
                return w1;
            case linear_kind::w2:
                return w2;
            case linear_kind::w3:
                return w3;
        }
        return wq;
    }
    [[nodiscard]] const std::vector<float>& linear(linear_kind kind) const noexcept {
        return const_cast<layer_weights&>(*this).linear(kind);
    }
};

namespace detail {

// Upper bounds that keep every size computation far from overflow and
// reject headers that are garbage rather than a model.
inline constexpr int max_dim = 1 << 16;
inline constexpr int max_hidden_dim = 1 << 18;
inline constexpr int max_layers = 1 << 10;
inline constexpr int max_vocab = 1 << 22;
inline constexpr int max_seq_len = 1 << 20;

inline std::vector<char> read_file_bytes(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw io_error(fmt::format("cannot open '{}' for reading", path.string()));
    }
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) {
        throw io_error(fmt::format("error while reading '{}'", path.string()));
    }
    return bytes;
}

// Little-endian scalar at bytes[offset]; the caller has checked the bounds.
template <class T>
[[nodiscard]] T read_le(const char* bytes) noexcept {
    static_assert(sizeof(T) == 4);
    std::uint32_t raw = 0;
    std::memcpy(&raw, bytes, 4);
    if constexpr (std::endian::native == std::endian::big) {
        raw = ((raw & 0xFFu) << 24) | ((raw & 0xFF00u) << 8) | ((raw >> 8) & 0xFF00u) | (raw >> 24);
    }
    return std::bit_cast<T>(raw);
}

// y = W x. out: rows; weights: rows * cols row-major; in: cols.
inline void matvec(std::span<float> out, std::span<const float> weights, std::span<const float> in) noexcept {
    using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const auto rows = static_cast<Eigen::Index>(out.size());
    const auto cols = static_cast<Eigen::Index>(in.size());
    const Eigen::Map<const row_major> w(weights.data(), rows, cols);
    const Eigen::Map<const Eigen::VectorXf> x(in.data(), cols);
    Eigen::Map<Eigen::VectorXf> y(out.data(), rows);
    y.noalias() = w * x;
}

// run.c rmsnorm. out, in, weight: same size; out may alias in.
inline void rmsnorm(std::span<float> out, std::span<const float> in, std::span<const float> weight) noexcept {
    float sum_squares = 0.0f;
    for (const float v : in) {
        sum_squares += v * v;
    }
    sum_squares /= static_cast<float>(in.size());
    sum_squares += 1e-5f;
    const float inv_rms = 1.0f / std::sqrt(sum_squares);
    for (std::size_t j = 0; j < in.size(); ++j) {
        out[j] = weight[j] * (inv_rms * in[j]);
    }
}

// run.c softmax, in place.
inline void softmax(std::span<float> values) noexcept {
    float max_value = values[0];
    for (const float v : values) {
        max_value = std::max(max_value, v);
    }
    float sum = 0.0f;
    for (float& v : values) {
        v = std::exp(v - max_value);
        sum += v;
    }
    for (float& v : values) {
        v /= sum;
    }
}

// log-sum-exp of the logits, in double.
[[nodiscard]] inline double log_partition(std::span<const float> logits) noexcept {
    const double max_logit = *std::max_element(logits.begin(), logits.end());
    double sum = 0.0;
    for (const float l : logits) {
        sum += std::exp(static_cast<double>(l) - max_logit);
    }
    return max_logit + std::log(sum);
}

// First index of the largest logit (ties go to the lower id, deterministically).
[[nodiscard]] inline int argmax(std::span<const float> logits) noexcept {
    return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// splitmix64: seeds the sampler's state from any 64-bit seed (0 included).
[[nodiscard]] constexpr std::uint64_t splitmix64(std::uint64_t& state) noexcept {
    state += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// xorshift64* (the generator run.c samples with), fully specified so that a
// seed gives the same stream on every platform and standard library.
class xorshift64star {
public:
    explicit constexpr xorshift64star(std::uint64_t seed) noexcept {
        std::uint64_t mix = seed;
        state_ = splitmix64(mix);
        if (state_ == 0) {
            state_ = 0x2545F4914F6CDD1Dull;  // xorshift must not start at 0
        }
    }
    constexpr std::uint64_t next() noexcept {
        state_ ^= state_ >> 12;
        state_ ^= state_ << 25;
        state_ ^= state_ >> 27;
        return state_ * 0x2545F4914F6CDD1Dull;
    }
    // Uniform in [0, 1) with 53 random bits.
    constexpr double uniform() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

private:
    std::uint64_t state_ = 0;
};

}  // namespace detail

// A llama2.c model held as float32 vectors, one per tensor.
class model {
public:
    // Reads a llama2.c legacy checkpoint (layout: docs/evaluation.md, "The data files").
    // Throws io_error if the file cannot be read, corrupt_data if the header
    // is not a sane configuration, the file size is not exactly what the
    // header implies, or a weight is not finite.
    static model load(const std::filesystem::path& path) {
        const std::vector<char> bytes = detail::read_file_bytes(path);
        constexpr std::size_t header_bytes = 7 * sizeof(std::int32_t);
        if (bytes.size() < header_bytes) {
            throw corrupt_data(fmt::format("'{}': {} bytes, shorter than the {}-byte llama2.c header", path.string(),
                                           bytes.size(), header_bytes));
        }
        std::array<int, 7> header{};
        for (std::size_t i = 0; i < header.size(); ++i) {
            header[i] = detail::read_le<std::int32_t>(bytes.data() + i * 4);
        }
        llama2::config cfg;
        cfg.dim = header[0];
        cfg.hidden_dim = header[1];
        cfg.n_layers = header[2];
        cfg.n_heads = header[3];
        cfg.n_kv_heads = header[4];
        cfg.shared_classifier = header[5] > 0;
        // -INT_MIN does not exist; treat it as the insane value it is.
        cfg.vocab_size = header[5] == std::numeric_limits<int>::min() ? 0 : std::abs(header[5]);
        cfg.seq_len = header[6];
        validate(cfg, path);

        model m;
        m.config_ = cfg;
        const std::size_t expected_floats = m.float_count();
        const std::size_t expected_bytes = header_bytes + expected_floats * sizeof(float);
        if (bytes.size() != expected_bytes) {
            throw corrupt_data(fmt::format(
                "'{}': expected {} bytes (header + {} float32 for dim={} hidden_dim={} n_layers={} n_heads={} "
                "n_kv_heads={} vocab_size={} seq_len={}), file has {} bytes",
                path.string(), expected_bytes, expected_floats, cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads,
                cfg.n_kv_heads, header[5], cfg.seq_len, bytes.size()));
        }

        std::size_t offset = header_bytes;
        // Reads the next `count` floats of the file into a fresh tensor.
        auto take = [&](std::size_t count, std::string_view tensor) {
            std::vector<float> values(count);
            for (std::size_t i = 0; i < count; ++i) {
                values[i] = detail::read_le<float>(bytes.data() + offset + i * 4);
                if (!std::isfinite(values[i])) {
                    throw corrupt_data(
                        fmt::format("'{}': tensor {} element {} is {}", path.string(), tensor, i, values[i]));
                }
            }
            offset += count * 4;
            return values;
        };
        const auto dim = static_cast<std::size_t>(cfg.dim);
        const auto hidden = static_cast<std::size_t>(cfg.hidden_dim);
        const auto kv_dim = static_cast<std::size_t>(cfg.kv_dim());
        const auto layers = static_cast<std::size_t>(cfg.n_layers);
        const auto vocab = static_cast<std::size_t>(cfg.vocab_size);
        const auto seq_len = static_cast<std::size_t>(cfg.seq_len);
        const auto half_head = static_cast<std::size_t>(cfg.head_size() / 2);

        m.token_embedding_ = take(vocab * dim, "token_embedding");
        m.layers_.resize(layers);
        // The file stores each tensor kind for all layers before the next kind.
        auto take_per_layer = [&](std::vector<float> layer_weights::*member, std::size_t count, std::string_view kind) {
            for (std::size_t l = 0; l < layers; ++l) {
                m.layers_[l].*member = take(count, fmt::format("layers.{}.{}", l, kind));
            }
        };
        take_per_layer(&layer_weights::rms_att, dim, "rms_att");
        take_per_layer(&layer_weights::wq, dim * dim, "wq");
        take_per_layer(&layer_weights::wk, kv_dim * dim, "wk");
        take_per_layer(&layer_weights::wv, kv_dim * dim, "wv");
        take_per_layer(&layer_weights::wo, dim * dim, "wo");
        take_per_layer(&layer_weights::rms_ffn, dim, "rms_ffn");
        take_per_layer(&layer_weights::w1, hidden * dim, "w1");
        take_per_layer(&layer_weights::w2, dim * hidden, "w2");
        take_per_layer(&layer_weights::w3, hidden * dim, "w3");
        m.rms_final_ = take(dim, "rms_final");
        m.freq_cis_real_ = take(seq_len * half_head, "freq_cis_real");
        m.freq_cis_imag_ = take(seq_len * half_head, "freq_cis_imag");
        if (!cfg.shared_classifier) {
            m.classifier_ = take(vocab * dim, "classifier");
        }
        m.derive();
        return m;
    }

    // Reads a model from named tensors (Hugging Face Llama names:
    // hf_linear_name, model.embed_tokens.weight, model.layers.{i}.
    // input_layernorm.weight / post_attention_layernorm.weight,
    // model.norm.weight, lm_head.weight when not shared). get(name, count)
    // returns the tensor's count floats or throws. The stored RoPE tables are
    // left empty (forward computes its own). `source` names the origin in
    // errors. Throws corrupt_data for a bad configuration, a wrong size or a
    // weight that is not finite.
    static model from_tensors(const llama2::config& cfg, const std::string& source,
                              const std::function<std::vector<float>(const std::string&, std::size_t)>& get) {
        validate(cfg, source);
        model m;
        m.config_ = cfg;
        auto take = [&](const std::string& name, std::size_t count) {
            std::vector<float> values = get(name, count);
            if (values.size() != count) {
                throw corrupt_data(fmt::format("'{}': tensor {} has {} values, the configuration needs {}", source, name,
                                               values.size(), count));
            }
            for (std::size_t i = 0; i < count; ++i) {
                if (!std::isfinite(values[i])) {
                    throw corrupt_data(fmt::format("'{}': tensor {} element {} is {}", source, name, i, values[i]));
                }
            }
            return values;
        };
        const auto dim = static_cast<std::size_t>(cfg.dim);
        const auto vocab = static_cast<std::size_t>(cfg.vocab_size);
        m.token_embedding_ = take("model.embed_tokens.weight", vocab * dim);
        m.layers_.resize(static_cast<std::size_t>(cfg.n_layers));
        m.derive();
        for (const linear_info& info : m.linear_infos_) {
            m.layers_[static_cast<std::size_t>(info.layer)].linear(info.kind) =
                take(hf_linear_name(info.layer, info.kind),
                     static_cast<std::size_t>(info.rows) * static_cast<std::size_t>(info.cols));
        }
        for (int l = 0; l < cfg.n_layers; ++l) {
            layer_weights& w = m.layers_[static_cast<std::size_t>(l)];
            w.rms_att = take(fmt::format("model.layers.{}.input_layernorm.weight", l), dim);
            w.rms_ffn = take(fmt::format("model.layers.{}.post_attention_layernorm.weight", l), dim);
        }
        m.rms_final_ = take("model.norm.weight", dim);
        if (!cfg.shared_classifier) {
            m.classifier_ = take("lm_head.weight", vocab * dim);
        }
        return m;
    }

    [[nodiscard]] const llama2::config& config() const noexcept { return config_; }
    [[nodiscard]] std::span<const float> token_embedding() const noexcept { return token_embedding_; }
    // The token embedding, writable (e.g. to store a quantizer's reconstruction);
    // with a shared classifier this changes the classifier too.
    [[nodiscard]] std::span<float> mutable_token_embedding() noexcept { return token_embedding_; }
    [[nodiscard]] const layer_weights& layer(int l) const noexcept { return layers_[static_cast<std::size_t>(l)]; }
    [[nodiscard]] std::span<const float> rms_final() const noexcept { return rms_final_; }
    // The RMSNorm weights, writable (fine-tuning stores its updates here, as
    // a quantizer stores its reconstruction through linears()); [dim] each.
    // Throws invalid_argument for a layer outside [0, n_layers).
    [[nodiscard]] std::span<float> mutable_rms_att(int l) { return layers_[layer_slot(l)].rms_att; }
    [[nodiscard]] std::span<float> mutable_rms_ffn(int l) { return layers_[layer_slot(l)].rms_ffn; }
    [[nodiscard]] std::span<float> mutable_rms_final() noexcept { return rms_final_; }
    // [vocab, dim]: the token embedding when shared.
    [[nodiscard]] std::span<const float> classifier() const noexcept {
        return config_.shared_classifier ? std::span<const float>(token_embedding_) : classifier_;
    }
    // [vocab, dim], writable: the token embedding when shared.
    [[nodiscard]] std::span<float> mutable_classifier() noexcept {
        return config_.shared_classifier ? std::span<float>(token_embedding_) : classifier_;
    }
    // The checkpoint's stored RoPE tables [seq_len, head_size / 2], unused by forward (see rope_cos).
    [[nodiscard]] std::span<const float> stored_freq_cis_real() const noexcept { return freq_cis_real_; }
    [[nodiscard]] std::span<const float> stored_freq_cis_imag() const noexcept { return freq_cis_imag_; }
    // RoPE tables [seq_len, head_size / 2] computed as run.c does:
    // angle(pos, i) = pos * 10000^(-2i / head_size) in float, cosf/sinf.
    [[nodiscard]] std::span<const float> rope_cos() const noexcept { return rope_cos_; }
    [[nodiscard]] std::span<const float> rope_sin() const noexcept { return rope_sin_; }

    [[nodiscard]] std::size_t linear_count() const noexcept { return linear_infos_.size(); }
    // Name, layer, kind and shape of every linear layer, layer-major in
    // all_linear_kinds order; linear_infos()[i].index == i.
    [[nodiscard]] const std::vector<linear_info>& linear_infos() const noexcept { return linear_infos_; }

    // Every linear layer with writable weights (e.g. to store a quantizer's
    // reconstruction in place). The spans stay valid until the model is
    // moved or destroyed.
    [[nodiscard]] std::vector<linear_ref> linears() {
        std::vector<linear_ref> refs;
        refs.reserve(linear_infos_.size());
        for (const linear_info& info : linear_infos_) {
            linear_ref ref;
            static_cast<linear_info&>(ref) = info;
            ref.weights = layers_[static_cast<std::size_t>(info.layer)].linear(info.kind);
            refs.push_back(std::move(ref));
        }
        return refs;
    }
    [[nodiscard]] std::vector<linear_view> linears() const {
        std::vector<linear_view> views;
        views.reserve(linear_infos_.size());
        for (const linear_info& info : linear_infos_) {
            linear_view view;
            static_cast<linear_info&>(view) = info;
            view.weights = layers_[static_cast<std::size_t>(info.layer)].linear(info.kind);
            views.push_back(std::move(view));
        }
        return views;
    }
    [[nodiscard]] linear_ref linear(int layer, linear_kind kind) {
        const std::size_t index = linear_index(layer, kind);
        linear_ref ref;
        static_cast<linear_info&>(ref) = linear_infos_[index];
        ref.weights = layers_[static_cast<std::size_t>(layer)].linear(kind);
        return ref;
    }
    [[nodiscard]] linear_view linear(int layer, linear_kind kind) const {
        const std::size_t index = linear_index(layer, kind);
        linear_view view;
        static_cast<linear_info&>(view) = linear_infos_[index];
        view.weights = layers_[static_cast<std::size_t>(layer)].linear(kind);
        return view;
    }

    // Every weight, the stored RoPE tables excluded.
    [[nodiscard]] std::size_t parameter_count() const noexcept {
        const auto half_head = static_cast<std::size_t>(config_.head_size() / 2);
        return float_count() - 2 * static_cast<std::size_t>(config_.seq_len) * half_head;
    }

private:
    static void validate(const llama2::config& cfg, const std::filesystem::path& path) {
        auto check = [&](int value, int limit, std::string_view field) {
            if (value <= 0 || value > limit) {
                throw corrupt_data(
                    fmt::format("'{}': header field {} = {} is outside [1, {}]", path.string(), field, value, limit));
            }
        };
        check(cfg.dim, detail::max_dim, "dim");
        check(cfg.hidden_dim, detail::max_hidden_dim, "hidden_dim");
        check(cfg.n_layers, detail::max_layers, "n_layers");
        check(cfg.n_heads, cfg.dim, "n_heads");
        check(cfg.n_kv_heads, cfg.n_heads, "n_kv_heads");
        check(cfg.vocab_size, detail::max_vocab, "vocab_size");
        check(cfg.seq_len, detail::max_seq_len, "seq_len");
        if (cfg.dim % cfg.n_heads != 0) {
            throw corrupt_data(
                fmt::format("'{}': dim = {} is not a multiple of n_heads = {}", path.string(), cfg.dim, cfg.n_heads));
        }
        if (cfg.n_heads % cfg.n_kv_heads != 0) {
            throw corrupt_data(fmt::format("'{}': n_heads = {} is not a multiple of n_kv_heads = {}", path.string(),
                                           cfg.n_heads, cfg.n_kv_heads));
        }
        if (cfg.head_size() % 2 != 0) {
            throw corrupt_data(fmt::format("'{}': head_size = dim / n_heads = {} is odd; RoPE rotates pairs",
                                           path.string(), cfg.head_size()));
        }
    }

    // Floats after the header that the configuration implies.
    [[nodiscard]] std::size_t float_count() const noexcept {
        const auto dim = static_cast<std::size_t>(config_.dim);
        const auto hidden = static_cast<std::size_t>(config_.hidden_dim);
        const auto kv_dim = static_cast<std::size_t>(config_.kv_dim());
        const auto layers = static_cast<std::size_t>(config_.n_layers);
        const auto vocab = static_cast<std::size_t>(config_.vocab_size);
        const auto seq_len = static_cast<std::size_t>(config_.seq_len);
        const auto half_head = static_cast<std::size_t>(config_.head_size() / 2);
        const std::size_t per_layer = 2 * dim + 2 * dim * dim + 2 * kv_dim * dim + 3 * hidden * dim;
        return vocab * dim + layers * per_layer + dim + 2 * seq_len * half_head +
               (config_.shared_classifier ? 0 : vocab * dim);
    }

    [[nodiscard]] std::size_t layer_slot(int layer) const {
        if (layer < 0 || layer >= config_.n_layers) {
            throw invalid_argument(fmt::format("layer {} outside [0, {})", layer, config_.n_layers));
        }
        return static_cast<std::size_t>(layer);
    }

    [[nodiscard]] std::size_t linear_index(int layer, linear_kind kind) const {
        return layer_slot(layer) * linears_per_layer + static_cast<std::size_t>(kind);
    }

    // Values derived from the configuration, recomputed in one place.
    void derive() {
        const int dim = config_.dim;
        const int hidden = config_.hidden_dim;
        const int kv_dim = config_.kv_dim();
        linear_infos_.clear();
        for (int l = 0; l < config_.n_layers; ++l) {
            for (const linear_kind kind : all_linear_kinds) {
                linear_info info;
                info.name = fmt::format("layers.{}.{}", l, to_string(kind));
                info.layer = l;
                info.kind = kind;
                info.cols = kind == linear_kind::w2 ? hidden : dim;
                switch (kind) {
                    case linear_kind::wq:
                    case linear_kind::wo:
                        info.rows = dim;
                        break;
                    case linear_kind::wk:
                    case linear_kind::wv:
                        info.rows = kv_dim;
                        break;
                    case linear_kind::w1:
                    case linear_kind::w3:
                        info.rows = hidden;
                        break;
                    case linear_kind::w2:
                        info.rows = dim;
                        break;
                }
                info.index = linear_infos_.size();
                linear_infos_.push_back(std::move(info));
            }
        }
        // run.c: head_dim = i % head_size over even i; freq = 1 / powf(10000, head_dim / head_size).
        const int head_size = config_.head_size();
        const auto half_head = static_cast<std::size_t>(head_size / 2);
        rope_cos_.assign(static_cast<std::size_t>(config_.seq_len) * half_head, 0.0f);
        rope_sin_.assign(rope_cos_.size(), 0.0f);
        for (int pos = 0; pos < config_.seq_len; ++pos) {
            for (std::size_t pair = 0; pair < half_head; ++pair) {
                const float head_dim = static_cast<float>(2 * pair);
                const float freq = 1.0f / std::pow(10000.0f, head_dim / static_cast<float>(head_size));
                const float angle = static_cast<float>(pos) * freq;
                rope_cos_[static_cast<std::size_t>(pos) * half_head + pair] = std::cos(angle);
                rope_sin_[static_cast<std::size_t>(pos) * half_head + pair] = std::sin(angle);
            }
        }
    }

    llama2::config config_;
    std::vector<float> token_embedding_;  // [vocab, dim]
    std::vector<layer_weights> layers_;   // [n_layers]
    std::vector<float> rms_final_;        // [dim]
    std::vector<float> freq_cis_real_;    // [seq_len, head_size / 2], as stored
    std::vector<float> freq_cis_imag_;    // [seq_len, head_size / 2], as stored
    std::vector<float> classifier_;       // [vocab, dim], empty when shared
    // Derived by derive().
    std::vector<linear_info> linear_infos_;
    std::vector<float> rope_cos_;  // [seq_len, head_size / 2]
    std::vector<float> rope_sin_;  // [seq_len, head_size / 2]
};

// Sees the input vector of a linear layer each time it runs (input: info.cols
// floats, valid only during the call). Layers that share an input (wq, wk,
// wv; w1, w3) are each called with it.
using activation_hook = std::function<void(const linear_info& info, std::span<const float> input)>;

// One decoding state: activations and the KV cache of one sequence. Holds a
// reference to the model, which must outlive it and not move.
class session {
public:
    explicit session(const model& m) : model_(&m) {
        const llama2::config& c = m.config();
        const auto dim = static_cast<std::size_t>(c.dim);
        const auto hidden = static_cast<std::size_t>(c.hidden_dim);
        const auto cache = static_cast<std::size_t>(c.n_layers) * static_cast<std::size_t>(c.seq_len) *
                           static_cast<std::size_t>(c.kv_dim());
        x_.resize(dim);
        xb_.resize(dim);
        xb2_.resize(dim);
        q_.resize(dim);
        hb_.resize(hidden);
        hb2_.resize(hidden);
        attention_.resize(static_cast<std::size_t>(c.seq_len));
        logits_.resize(static_cast<std::size_t>(c.vocab_size));
        key_cache_.assign(cache, 0.0f);
        value_cache_.assign(cache, 0.0f);
    }

    // Called for every linear layer of every later forward step; an empty hook disables it.
    void set_activation_hook(activation_hook hook) { hook_ = std::move(hook); }

    // Runs `token` at position `pos` and returns the next-token logits
    // (vocab_size floats, valid until the next call). Positions are fed in
    // order: pos may be at most one past the last position run, and going
    // back to an earlier pos discards the cache after it.
    std::span<const float> forward(int token, int pos) {
        const llama2::config& c = model_->config();
        if (token < 0 || token >= c.vocab_size) {
            throw invalid_argument(fmt::format("token {} outside [0, {})", token, c.vocab_size));
        }
        if (pos < 0 || pos >= c.seq_len || pos > positions_) {
            throw invalid_argument(fmt::format("position {} outside [0, {}] (seq_len {}, {} positions cached)", pos,
                                               std::min(positions_, c.seq_len - 1), c.seq_len, positions_));
        }
        const auto dim = static_cast<std::size_t>(c.dim);
        const auto kv_dim = static_cast<std::size_t>(c.kv_dim());
        const auto head_size = static_cast<std::size_t>(c.head_size());
        const auto half_head = head_size / 2;
        const auto seq_len = static_cast<std::size_t>(c.seq_len);
        const auto position = static_cast<std::size_t>(pos);
        const auto kv_group = static_cast<std::size_t>(c.kv_group());
        const float inv_sqrt_head = 1.0f / std::sqrt(static_cast<float>(head_size));
        const std::span<const float> cosines = model_->rope_cos().subspan(position * half_head, half_head);
        const std::span<const float> sines = model_->rope_sin().subspan(position * half_head, half_head);

        std::copy_n(
            model_->token_embedding().begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(token) * dim), dim,
            x_.begin());
        for (int l = 0; l < c.n_layers; ++l) {
            const layer_weights& w = model_->layer(l);
            const std::size_t layer_offset = static_cast<std::size_t>(l) * seq_len * kv_dim;
            const std::span<float> key(key_cache_.data() + layer_offset + position * kv_dim, kv_dim);
            const std::span<float> value(value_cache_.data() + layer_offset + position * kv_dim, kv_dim);

            detail::rmsnorm(xb_, x_, w.rms_att);
            apply(l, linear_kind::wq, q_, xb_);
            apply(l, linear_kind::wk, key, xb_);
            apply(l, linear_kind::wv, value, xb_);

            // RoPE on each (even, odd) pair of every query head and every key head.
            for (std::size_t i = 0; i < dim; i += 2) {
                const std::size_t pair = (i % head_size) / 2;
                const float fcr = cosines[pair];
                const float fci = sines[pair];
                const float q0 = q_[i];
                const float q1 = q_[i + 1];
                q_[i] = q0 * fcr - q1 * fci;
                q_[i + 1] = q0 * fci + q1 * fcr;
                if (i < kv_dim) {
                    const float k0 = key[i];
                    const float k1 = key[i + 1];
                    key[i] = k0 * fcr - k1 * fci;
                    key[i + 1] = k0 * fci + k1 * fcr;
                }
            }

            // Causal attention over positions 0..pos; query head h reads key/value head h / kv_group.
            const std::span<float> scores(attention_.data(), position + 1);
            for (std::size_t h = 0; h < static_cast<std::size_t>(c.n_heads); ++h) {
                const float* query = q_.data() + h * head_size;
                const std::size_t kv_head_offset = (h / kv_group) * head_size;
                for (std::size_t t = 0; t <= position; ++t) {
                    const float* k = key_cache_.data() + layer_offset + t * kv_dim + kv_head_offset;
                    float score = 0.0f;
                    for (std::size_t i = 0; i < head_size; ++i) {
                        score += query[i] * k[i];
                    }
                    scores[t] = score * inv_sqrt_head;
                }
                detail::softmax(scores);
                float* out = xb_.data() + h * head_size;
                std::fill_n(out, head_size, 0.0f);
                for (std::size_t t = 0; t <= position; ++t) {
                    const float* v = value_cache_.data() + layer_offset + t * kv_dim + kv_head_offset;
                    const float a = scores[t];
                    for (std::size_t i = 0; i < head_size; ++i) {
                        out[i] += a * v[i];
                    }
                }
            }
            apply(l, linear_kind::wo, xb2_, xb_);
            for (std::size_t i = 0; i < dim; ++i) {
                x_[i] += xb2_[i];
            }

            // SwiGLU feed-forward: w2(silu(w1 x) * w3 x).
            detail::rmsnorm(xb_, x_, w.rms_ffn);
            apply(l, linear_kind::w1, hb_, xb_);
            apply(l, linear_kind::w3, hb2_, xb_);
            for (std::size_t i = 0; i < hb_.size(); ++i) {
                float v = hb_[i];
                v *= 1.0f / (1.0f + std::exp(-v));
                hb_[i] = v * hb2_[i];
            }
            apply(l, linear_kind::w2, xb_, hb_);
            for (std::size_t i = 0; i < dim; ++i) {
                x_[i] += xb_[i];
            }
        }
        detail::rmsnorm(x_, x_, model_->rms_final());
        detail::matvec(logits_, model_->classifier(), x_);
        positions_ = pos + 1;
        return logits_;
    }

    [[nodiscard]] const model& weights() const noexcept { return *model_; }

private:
    // out = W in for linear (layer, kind), telling the hook about `in` first.
    void apply(int layer, linear_kind kind, std::span<float> out, std::span<const float> in) {
        if (hook_) {
            hook_(model_->linear_infos()[static_cast<std::size_t>(layer) * linears_per_layer +
                                         static_cast<std::size_t>(kind)],
                  in);
        }
        detail::matvec(out, model_->layer(layer).linear(kind), in);
    }

    const model* model_;
    activation_hook hook_;
    int positions_ = 0;               // positions [0, positions_) hold valid cache entries
    std::vector<float> x_;            // [dim] residual stream
    std::vector<float> xb_;           // [dim] normed input / attention output / ffn output
    std::vector<float> xb2_;          // [dim]
    std::vector<float> q_;            // [dim]
    std::vector<float> hb_;           // [hidden]
    std::vector<float> hb2_;          // [hidden]
    std::vector<float> attention_;    // [seq_len]
    std::vector<float> logits_;       // [vocab]
    std::vector<float> key_cache_;    // [layers, seq_len, kv_dim]
    std::vector<float> value_cache_;  // [layers, seq_len, kv_dim]
};

// llama2.c's BPE tokenizer (tokenizer.bin format: int32 max_token_length,
// then per token float32 score, int32 length, bytes).
class tokenizer {
public:
    // vocab_size comes from the model (the file does not store it). Throws
    // io_error if unreadable, corrupt_data if truncated, longer than
    // vocab_size tokens, or otherwise malformed.
    static tokenizer load(const std::filesystem::path& path, int vocab_size) {
        if (vocab_size <= 0 || vocab_size > detail::max_vocab) {
            throw invalid_argument(
                fmt::format("tokenizer vocab_size {} outside [1, {}]", vocab_size, detail::max_vocab));
        }
        const std::vector<char> bytes = detail::read_file_bytes(path);
        std::size_t offset = 0;
        auto need = [&](std::size_t count, std::string_view what) {
            if (bytes.size() - offset < count) {
                throw corrupt_data(fmt::format("'{}': truncated at byte {} of {} while reading {}", path.string(),
                                               offset, bytes.size(), what));
            }
        };
        tokenizer tok;
        need(4, "max_token_length");
        tok.max_token_length_ = detail::read_le<std::int32_t>(bytes.data());
        offset = 4;
        if (tok.max_token_length_ <= 0 || tok.max_token_length_ > (1 << 16)) {
            throw corrupt_data(
                fmt::format("'{}': max_token_length {} outside [1, 65536]", path.string(), tok.max_token_length_));
        }
        const auto vocab = static_cast<std::size_t>(vocab_size);
        tok.pieces_.resize(vocab);
        tok.scores_.resize(vocab);
        for (std::size_t id = 0; id < vocab; ++id) {
            need(8, fmt::format("token {}", id));
            const float score = detail::read_le<float>(bytes.data() + offset);
            const std::int32_t length = detail::read_le<std::int32_t>(bytes.data() + offset + 4);
            offset += 8;
            if (!std::isfinite(score)) {
                throw corrupt_data(fmt::format("'{}': token {} has score {}", path.string(), id, score));
            }
            if (length < 0 || length > tok.max_token_length_) {
                throw corrupt_data(fmt::format("'{}': token {} has length {} outside [0, max_token_length {}]",
                                               path.string(), id, length, tok.max_token_length_));
            }
            need(static_cast<std::size_t>(length), fmt::format("token {}", id));
            tok.scores_[id] = score;
            tok.pieces_[id].assign(bytes.data() + offset, static_cast<std::size_t>(length));
            offset += static_cast<std::size_t>(length);
        }
        if (offset != bytes.size()) {
            throw corrupt_data(fmt::format("'{}': {} bytes after the {} tokens (file has {} bytes)", path.string(),
                                           bytes.size() - offset, vocab_size, bytes.size()));
        }
        // run.c looks pieces up by bsearch in a sorted copy; with duplicate
        // pieces it would find any of them, here the lowest id wins.
        for (std::size_t id = 0; id < vocab; ++id) {
            tok.ids_.emplace(tok.pieces_[id], static_cast<int>(id));
        }
        tok.dummy_prefix_ = tok.lookup(" ");
        // Byte fallback: ids 3..258 are "<0x00>".."<0xFF>" (after <unk>, <s>, </s>).
        tok.byte_fallback_ = vocab >= 3 + 256;
        for (std::size_t b = 0; b < 256 && tok.byte_fallback_; ++b) {
            tok.byte_fallback_ = tok.pieces_[3 + b] == fmt::format("<0x{:02X}>", b);
        }
        return tok;
    }

    [[nodiscard]] int vocab_size() const noexcept { return static_cast<int>(pieces_.size()); }
    [[nodiscard]] int max_token_length() const noexcept { return max_token_length_; }
    [[nodiscard]] bool has_byte_fallback() const noexcept { return byte_fallback_; }
    [[nodiscard]] std::string_view piece(int id) const { return pieces_.at(checked(id)); }
    [[nodiscard]] float score(int id) const { return scores_.at(checked(id)); }
    // Id of the token whose bytes are exactly `text`, or -1.
    [[nodiscard]] int lookup(std::string_view text) const {
        const auto it = ids_.find(text);
        return it == ids_.end() ? -1 : it->second;
    }

    // run.c encode: optional BOS, a dummy-prefix " " token when the text is
    // not empty, one token per UTF-8 code point (its bytes as byte tokens
    // when the code point is not in the vocabulary), then repeatedly merge
    // the adjacent pair whose concatenation is the highest-scoring token
    // (first such pair on ties), optional EOS. Unlike run.c the text may hold
    // NUL bytes (encoded like any other byte) instead of ending there.
    [[nodiscard]] std::vector<int> encode(std::string_view text, bool bos, bool eos) const {
        std::vector<int> tokens;
        tokens.reserve(text.size() + 3);
        if (bos) {
            tokens.push_back(bos_token);
        }
        if (!text.empty()) {
            if (dummy_prefix_ < 0) {
                throw invalid_argument("tokenizer has no \" \" token for the dummy prefix");
            }
            tokens.push_back(dummy_prefix_);
        }
        std::string code_point;
        for (std::size_t i = 0; i < text.size(); ++i) {
            const auto byte = static_cast<unsigned char>(text[i]);
            if ((byte & 0xC0u) != 0x80u) {
                code_point.clear();  // not a continuation byte: a new code point starts
            }
            code_point.push_back(static_cast<char>(byte));
            const auto next = i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0u;
            if ((next & 0xC0u) == 0x80u && code_point.size() < 4) {
                continue;  // the code point goes on (run.c caps it at 4 bytes)
            }
            const int id = lookup(code_point);
            if (id >= 0) {
                tokens.push_back(id);
            } else {
                for (const char c : code_point) {
                    tokens.push_back(byte_token(static_cast<unsigned char>(c)));
                }
            }
            code_point.clear();
        }
        merge(tokens);
        if (eos) {
            tokens.push_back(eos_token);
        }
        return tokens;
    }

    // run.c decode: the token's piece, without its leading space right after
    // BOS, and "<0xAB>" byte tokens as the raw byte.
    [[nodiscard]] std::string decode(int prev_token, int token) const {
        std::string_view text = piece(token);
        if (prev_token == bos_token && !text.empty() && text.front() == ' ') {
            text.remove_prefix(1);
        }
        if (const int byte = parse_byte_piece(text); byte >= 0) {
            return std::string(1, static_cast<char>(byte));
        }
        return std::string(text);
    }

    // The text of a token sequence as run.c's generate loop prints it:
    // decode(previous, token) for each token, BOS and EOS skipped. Inverts
    // encode(text, true, eos) for any text.
    [[nodiscard]] std::string decode(std::span<const int> tokens) const {
        std::string text;
        int previous = -1;
        for (const int token : tokens) {
            if (token != bos_token && token != eos_token) {
                text += decode(previous, token);
            }
            previous = token;
        }
        return text;
    }

private:
    [[nodiscard]] std::size_t checked(int id) const {
        if (id < 0 || id >= vocab_size()) {
            throw invalid_argument(fmt::format("token id {} outside [0, {})", id, vocab_size()));
        }
        return static_cast<std::size_t>(id);
    }

    [[nodiscard]] int byte_token(unsigned char byte) const {
        if (!byte_fallback_) {
            throw invalid_argument(
                fmt::format("byte 0x{:02X} is not in the vocabulary and the tokenizer has no byte tokens", byte));
        }
        return 3 + static_cast<int>(byte);
    }

    // The byte a "<0xAB>" piece stands for, or -1 for any other piece.
    [[nodiscard]] static int parse_byte_piece(std::string_view text) noexcept {
        if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') {
            return -1;
        }
        auto hex = [](char c) {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            return -1;
        };
        const int high = hex(text[3]);
        const int low = hex(text[4]);
        return high < 0 || low < 0 ? -1 : high * 16 + low;
    }

    // run.c's merge loop, with the score of each adjacent pair cached so that
    // a merge recomputes only its two neighbouring pairs (same result, O(n)
    // per merge instead of O(n) string lookups).
    void merge(std::vector<int>& tokens) const {
        struct pair_candidate {
            int id;       // token of the concatenation, -1 if none
            float score;  // its score
        };
        auto candidate = [&](int left, int right) {
            std::string joined = pieces_[static_cast<std::size_t>(left)];
            joined += pieces_[static_cast<std::size_t>(right)];
            const int id = lookup(joined);
            return pair_candidate{id, id >= 0 ? scores_[static_cast<std::size_t>(id)] : 0.0f};
        };
        if (tokens.size() < 2) {
            return;
        }
        std::vector<pair_candidate> pairs;
        pairs.reserve(tokens.size() - 1);
        for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
            pairs.push_back(candidate(tokens[i], tokens[i + 1]));
        }
        while (!pairs.empty()) {
            float best_score = -1e10f;  // run.c's starting point: lower-scoring merges never happen
            std::size_t best = pairs.size();
            for (std::size_t i = 0; i < pairs.size(); ++i) {
                if (pairs[i].id >= 0 && pairs[i].score > best_score) {
                    best_score = pairs[i].score;
                    best = i;
                }
            }
            if (best == pairs.size()) {
                break;
            }
            tokens[best] = pairs[best].id;
            tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best) + 1);
            pairs.erase(pairs.begin() + static_cast<std::ptrdiff_t>(best));
            if (best > 0) {
                pairs[best - 1] = candidate(tokens[best - 1], tokens[best]);
            }
            if (best < pairs.size()) {
                pairs[best] = candidate(tokens[best], tokens[best + 1]);
            }
        }
    }

    int max_token_length_ = 0;
    std::vector<std::string> pieces_;  // [vocab] token bytes
    std::vector<float> scores_;        // [vocab] merge priority
    std::map<std::string, int, std::less<>> ids_;
    int dummy_prefix_ = -1;
    bool byte_fallback_ = false;
};

// ---------------------------------------------------------------------------
// Evaluation

// Next-token negative log-likelihood over a set of sequences.
struct perplexity_result {
    double mean_nll = 0.0;    // nats per scored token
    double perplexity = 0.0;  // exp(mean_nll)
    std::size_t tokens = 0;   // scored positions (sequence length - 1, summed)
    std::size_t sequences = 0;
};

// Reference model versus candidate on the same sequences, at every scored
// position p (predicting token p + 1).
struct comparison {
    double mean_kl = 0.0;         // mean over positions of KL(reference || candidate), nats
    double max_kl = 0.0;          // largest single-position KL
    double top1_agreement = 0.0;  // share of positions whose argmax tokens agree
    std::size_t positions = 0;
    perplexity_result reference;
    perplexity_result candidate;

    // candidate perplexity / reference perplexity - 1.
    [[nodiscard]] double relative_perplexity_increase() const noexcept {
        return candidate.perplexity / reference.perplexity - 1.0;
    }
};

namespace detail {

inline void check_sequences(const model& m, const std::vector<std::vector<int>>& sequences) {
    const llama2::config& c = m.config();
    for (std::size_t s = 0; s < sequences.size(); ++s) {
        if (sequences[s].size() > static_cast<std::size_t>(c.seq_len)) {
            throw invalid_argument(
                fmt::format("sequence {} has {} tokens, more than seq_len {}", s, sequences[s].size(), c.seq_len));
        }
        for (const int token : sequences[s]) {
            if (token < 0 || token >= c.vocab_size) {
                throw invalid_argument(
                    fmt::format("sequence {} holds token {} outside [0, {})", s, token, c.vocab_size));
            }
        }
    }
}

[[nodiscard]] inline perplexity_result finish(double total_nll, std::size_t tokens, std::size_t sequences) noexcept {
    perplexity_result r;
    r.tokens = tokens;
    r.sequences = sequences;
    r.mean_nll = tokens == 0 ? 0.0 : total_nll / static_cast<double>(tokens);
    r.perplexity = std::exp(r.mean_nll);
    return r;
}

}  // namespace detail

// Mean NLL of token p + 1 given tokens 0..p, over every p of every sequence.
// Sequences must fit in seq_len; shorter than 2 tokens they score nothing.
[[nodiscard]] inline perplexity_result evaluate_sequences(const model& m,
                                                          const std::vector<std::vector<int>>& sequences) {
    detail::check_sequences(m, sequences);
    session s(m);
    double total_nll = 0.0;
    std::size_t tokens = 0;
    for (const std::vector<int>& sequence : sequences) {
        for (std::size_t p = 0; p + 1 < sequence.size(); ++p) {
            const std::span<const float> logits = s.forward(sequence[p], static_cast<int>(p));
            total_nll +=
                detail::log_partition(logits) - static_cast<double>(logits[static_cast<std::size_t>(sequence[p + 1])]);
            ++tokens;
        }
    }
    return detail::finish(total_nll, tokens, sequences.size());
}

// The real-text protocol's token sequences: each document encoded with BOS
// and the dummy prefix (no EOS), truncated to max_tokens.
[[nodiscard]] inline std::vector<std::vector<int>> encode_documents(const tokenizer& tok,
                                                                    const std::vector<std::string>& documents,
                                                                    int max_tokens) {
    if (max_tokens < 1) {
        throw invalid_argument(fmt::format("max_tokens {} must be positive", max_tokens));
    }
    std::vector<std::vector<int>> sequences;
    sequences.reserve(documents.size());
    for (const std::string& document : documents) {
        std::vector<int> tokens = tok.encode(document, true, false);
        tokens.resize(std::min(tokens.size(), static_cast<std::size_t>(max_tokens)));
        sequences.push_back(std::move(tokens));
    }
    return sequences;
}

// Real-text perplexity: encode_documents truncated to seq_len, then evaluate_sequences.
[[nodiscard]] inline perplexity_result evaluate_text(const model& m, const tokenizer& tok,
                                                     const std::vector<std::string>& documents) {
    if (tok.vocab_size() != m.config().vocab_size) {
        throw invalid_argument(
            fmt::format("tokenizer has {} tokens, model vocab_size is {}", tok.vocab_size(), m.config().vocab_size));
    }
    return evaluate_sequences(m, encode_documents(tok, documents, m.config().seq_len));
}

// `count` sequences of `length` tokens, each BOS followed by length - 1
// tokens sampled from the model (softmax(logits / temperature) by inverse
// CDF in double; temperature 0 takes the argmax). Generation runs through
// BOS tokens the model emits (they separate stories in its training data).
// The random stream is xorshift64* seeded by splitmix64(seed), identical on
// every platform; the tokens are reproducible wherever the float logits are.
[[nodiscard]] inline std::vector<std::vector<int>> sample_sequences(const model& m, int count, int length,
                                                                    std::uint64_t seed, float temperature) {
    const llama2::config& c = m.config();
    if (count < 0) {
        throw invalid_argument(fmt::format("sequence count {} is negative", count));
    }
    if (length < 1 || length > c.seq_len) {
        throw invalid_argument(fmt::format("sequence length {} outside [1, seq_len {}]", length, c.seq_len));
    }
    if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
        throw invalid_argument(fmt::format("temperature {} must be finite and >= 0", temperature));
    }
    detail::xorshift64star rng(seed);
    session s(m);
    std::vector<double> weights(static_cast<std::size_t>(c.vocab_size));
    std::vector<std::vector<int>> sequences(static_cast<std::size_t>(count));
    for (std::vector<int>& sequence : sequences) {
        sequence.reserve(static_cast<std::size_t>(length));
        sequence.push_back(bos_token);
        for (int pos = 0; pos + 1 < length; ++pos) {
            const std::span<const float> logits = s.forward(sequence.back(), pos);
            int next = detail::argmax(logits);
            if (temperature > 0.0f) {
                const double max_logit = logits[static_cast<std::size_t>(next)];
                double total = 0.0;
                for (std::size_t i = 0; i < logits.size(); ++i) {
                    weights[i] = std::exp((static_cast<double>(logits[i]) - max_logit) / temperature);
                    total += weights[i];
                }
                const double coin = rng.uniform() * total;
                double cumulative = 0.0;
                next = static_cast<int>(logits.size()) - 1;  // guards against rounding at the top end
                for (std::size_t i = 0; i < logits.size(); ++i) {
                    cumulative += weights[i];
                    if (coin < cumulative) {
                        next = static_cast<int>(i);
                        break;
                    }
                }
            }
            sequence.push_back(next);
        }
    }
    return sequences;
}

// BOS followed by length - 1 greedy (argmax) tokens.
[[nodiscard]] inline std::vector<int> generate_greedy(const model& m, int length) {
    return sample_sequences(m, 1, length, 0, 0.0f).front();
}

// Compares next-token distributions of two models with the same vocabulary
// at every scored position of every sequence.
[[nodiscard]] inline comparison compare_models(const model& reference, const model& candidate,
                                               const std::vector<std::vector<int>>& sequences) {
    if (reference.config().vocab_size != candidate.config().vocab_size) {
        throw invalid_argument(fmt::format("vocab sizes differ: reference {}, candidate {}",
                                           reference.config().vocab_size, candidate.config().vocab_size));
    }
    detail::check_sequences(reference, sequences);
    detail::check_sequences(candidate, sequences);
    session reference_session(reference);
    session candidate_session(candidate);
    comparison result;
    double total_kl = 0.0;
    double reference_nll = 0.0;
    double candidate_nll = 0.0;
    std::size_t agreements = 0;
    for (const std::vector<int>& sequence : sequences) {
        for (std::size_t p = 0; p + 1 < sequence.size(); ++p) {
            const int pos = static_cast<int>(p);
            const std::span<const float> ref_logits = reference_session.forward(sequence[p], pos);
            const std::span<const float> cand_logits = candidate_session.forward(sequence[p], pos);
            const double ref_log_z = detail::log_partition(ref_logits);
            const double cand_log_z = detail::log_partition(cand_logits);
            double kl = 0.0;
            for (std::size_t i = 0; i < ref_logits.size(); ++i) {
                const double ref_log_p = static_cast<double>(ref_logits[i]) - ref_log_z;
                const double cand_log_p = static_cast<double>(cand_logits[i]) - cand_log_z;
                kl += std::exp(ref_log_p) * (ref_log_p - cand_log_p);
            }
            kl = std::max(kl, 0.0);  // rounding can leave -1e-17 for identical distributions
            total_kl += kl;
            result.max_kl = std::max(result.max_kl, kl);
            agreements += detail::argmax(ref_logits) == detail::argmax(cand_logits) ? 1 : 0;
            const auto target = static_cast<std::size_t>(sequence[p + 1]);
            reference_nll += ref_log_z - static_cast<double>(ref_logits[target]);
            candidate_nll += cand_log_z - static_cast<double>(cand_logits[target]);
            ++result.positions;
        }
    }
    if (result.positions > 0) {
        result.mean_kl = total_kl / static_cast<double>(result.positions);
        result.top1_agreement = static_cast<double>(agreements) / static_cast<double>(result.positions);
    }
    result.reference = detail::finish(reference_nll, result.positions, sequences.size());
    result.candidate = detail::finish(candidate_nll, result.positions, sequences.size());
    return result;
}

// Runs every sequence through the model (all positions, logits discarded)
// with `hook` seeing each linear layer's input: the calibration pass.
inline void collect_activations(const model& m, const std::vector<std::vector<int>>& sequences,
                                const activation_hook& hook) {
    detail::check_sequences(m, sequences);
    session s(m);
    s.set_activation_hook(hook);
    for (const std::vector<int>& sequence : sequences) {
        for (std::size_t p = 0; p < sequence.size(); ++p) {
            (void)s.forward(sequence[p], static_cast<int>(p));
        }
    }
}

// The lines of a text file without their line terminators ("\n" or "\r\n").
// Throws io_error if the file cannot be read.
[[nodiscard]] inline std::vector<std::string> read_lines(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw io_error(fmt::format("cannot open '{}' for reading", path.string()));
    }
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') {
            line.pop_back();
        }
        lines.push_back(std::move(line));
    }
    if (in.bad()) {
        throw io_error(fmt::format("error while reading '{}'", path.string()));
    }
    return lines;
}

}  // namespace svq::llama2
