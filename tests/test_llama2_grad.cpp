#include "catch.hpp"

#include "common/llama2_grad.hpp"
#include "data_files.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace llama2 = svq::llama2;

using svq::test::contains;
using svq::test::data_dir;
using svq::test::stories_model_path;

bool model_present() { return fs::exists(stories_model_path); }

// The message of the svq::invalid_argument that `action` throws, or "" when it throws none.
template <class Action>
std::string invalid_argument_message(Action&& action) {
    try {
        action();
    } catch (const svq::invalid_argument& e) {
        return e.what();
    }
    return "";
}

struct small_shape {
    int dim = 16, hidden = 24, layers = 2, heads = 4, kv_heads = 2, vocab = 40, seq_len = 16;
    bool shared_classifier = true;
};

// A random llama2.c model of the given shape, through a checkpoint file (the
// only way model builds one). Every weight is a multiple of 2^-8 (matrices in
// [-0.5, 0.5], norm weights in [0.875, 1.125]), so w +- 2^-13 and w +- 2^-12
// are exact floats: the finite differences below step exactly and
// symmetrically around the float weight.
llama2::model random_model(std::uint64_t seed, const small_shape& shape = {}) {
    const int kv_dim = shape.dim / shape.heads * shape.kv_heads;
    const int head_size = shape.dim / shape.heads;
    std::vector<char> bytes;
    auto put = [&](auto v) {
        const char* p = reinterpret_cast<const char*>(&v);
        bytes.insert(bytes.end(), p, p + 4);
    };
    for (const int v : {shape.dim, shape.hidden, shape.layers, shape.heads, shape.kv_heads,
                        shape.shared_classifier ? shape.vocab : -shape.vocab, shape.seq_len}) {
        put(static_cast<std::int32_t>(v));
    }
    std::mt19937_64 rng(seed);
    auto put_matrix = [&](int count) {
        std::uniform_int_distribution<int> k(-128, 128);
        for (int i = 0; i < count; ++i) {
            put(static_cast<float>(k(rng)) / 256.0f);
        }
    };
    auto put_norm = [&](int count) {
        std::uniform_int_distribution<int> k(-32, 32);
        for (int i = 0; i < count; ++i) {
            put(1.0f + static_cast<float>(k(rng)) / 256.0f);
        }
    };
    put_matrix(shape.vocab * shape.dim);
    put_norm(shape.layers * shape.dim);
    put_matrix(shape.layers * shape.dim * shape.dim);
    put_matrix(shape.layers * kv_dim * shape.dim);
    put_matrix(shape.layers * kv_dim * shape.dim);
    put_matrix(shape.layers * shape.dim * shape.dim);
    put_norm(shape.layers * shape.dim);
    put_matrix(shape.layers * shape.hidden * shape.dim);
    put_matrix(shape.layers * shape.dim * shape.hidden);
    put_matrix(shape.layers * shape.hidden * shape.dim);
    put_norm(shape.dim);
    for (int i = 0; i < 2 * shape.seq_len * head_size / 2; ++i) {
        put(0.0f);  // stored RoPE tables: unused by the forward pass
    }
    if (!shape.shared_classifier) {
        put_matrix(shape.vocab * shape.dim);
    }
    std::random_device entropy;  // only to avoid clashing with a parallel run
    const fs::path path =
        fs::temp_directory_path() / fmt::format("svq_test_llama2_grad_{}_{:08x}.bin", seed, entropy());
    {
        std::ofstream out(path, std::ios::binary);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    llama2::model m = llama2::model::load(path);
    fs::remove(path);
    return m;
}

std::vector<std::vector<int>> random_sequences(std::uint64_t seed, int vocab, const std::vector<int>& lengths) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> token(0, vocab - 1);
    std::vector<std::vector<int>> sequences;
    for (const int length : lengths) {
        std::vector<int> s(static_cast<std::size_t>(length));
        for (int& t : s) {
            t = token(rng);
        }
        sequences.push_back(std::move(s));
    }
    return sequences;
}

// Largest |forward_sequence<T> - session::forward| over every logit, relative
// to the largest |logit| (the logit scale).
template <class T>
double forward_mismatch(const llama2::model& m, const std::vector<int>& tokens) {
    const std::vector<T> batched = llama2::forward_sequence<T>(m, tokens);
    const auto vocab = static_cast<std::size_t>(m.config().vocab_size);
    REQUIRE(batched.size() == tokens.size() * vocab);
    llama2::session s(m);
    double max_diff = 0.0;
    double max_logit = 0.0;
    for (std::size_t p = 0; p < tokens.size(); ++p) {
        const std::span<const float> logits = s.forward(tokens[p], static_cast<int>(p));
        for (std::size_t i = 0; i < vocab; ++i) {
            max_diff = std::max(max_diff, std::abs(static_cast<double>(batched[p * vocab + i]) - logits[i]));
            max_logit = std::max(max_logit, std::abs(static_cast<double>(logits[i])));
        }
    }
    return max_diff / max_logit;
}

// Every float of a gradient result in one list, tensors in a fixed order.
template <class T>
std::vector<T> flatten(const llama2::parameter_gradients<T>& g) {
    std::vector<T> all;
    auto append = [&](const std::vector<T>& v) { all.insert(all.end(), v.begin(), v.end()); };
    for (const auto& v : g.linears) append(v);
    for (const auto& v : g.rms_att) append(v);
    for (const auto& v : g.rms_ffn) append(v);
    append(g.rms_final);
    append(g.token_embedding);
    append(g.classifier);
    return all;
}

// One parameter tensor: its name, its writable floats in a model, and its gradient.
struct tensor_ref {
    std::string name;
    std::span<float> weights;
    std::span<const double> gradient;
};

// Every tensor of m that has a gradient in g (token embedding and classifier included).
std::vector<tensor_ref> every_tensor(llama2::model& m, const llama2::parameter_gradients<double>& g) {
    std::vector<tensor_ref> tensors;
    for (const llama2::linear_ref& linear : m.linears()) {
        tensors.push_back({linear.name, linear.weights, g.linears[linear.index]});
    }
    for (int l = 0; l < m.config().n_layers; ++l) {
        const auto slot = static_cast<std::size_t>(l);
        tensors.push_back({fmt::format("layers.{}.rms_att", l), m.mutable_rms_att(l), g.rms_att[slot]});
        tensors.push_back({fmt::format("layers.{}.rms_ffn", l), m.mutable_rms_ffn(l), g.rms_ffn[slot]});
    }
    tensors.push_back({"rms_final", m.mutable_rms_final(), g.rms_final});
    tensors.push_back({"token_embedding", m.mutable_token_embedding(), g.token_embedding});
    if (!m.config().shared_classifier) {
        tensors.push_back({"classifier", m.mutable_classifier(), g.classifier});
    }
    return tensors;
}

// Analytic double gradient vs central finite differences of kl_loss<double>
// for the entry of largest |gradient| and `samples` random entries of every
// tensor. Step h = 2^-13 (exact on the dyadic weights), Richardson-extrapolated
// from h and 2h: (4 D(h) - D(2h)) / 3 has truncation error O(h^4), and the
// double rounding noise of a loss of order 1 (~1e-15) divided by the step
// adds a few 1e-12. Measured (g++ 12, x86-64): at most 1.2e-11 absolute
// (the largest token-embedding entry, 0.40, whose error falls as h^4: 2.1e-10
// at h = 2^-12, 2.8e-8 at 2^-9, so it is truncation), 4e-12 elsewhere, on
// entries from 8e-6 to 0.4. Tolerance 1e-7 relative + 1e-10 absolute: 10x or
// more above what was measured, and a wrong or missing term (off by its own
// size, >= 1e-3 relative here) cannot pass it.
void check_gradients_by_finite_differences(const llama2::model& student, const llama2::model& teacher_model,
                                           const std::vector<std::vector<int>>& sequences, int samples) {
    const llama2::teacher_distributions teacher = llama2::make_teacher<double>(teacher_model, sequences);
    const llama2::kl_gradient_result<double> analytic =
        llama2::kl_loss_gradients<double>(student, sequences, teacher, {1, true});
    CHECK(analytic.loss == llama2::kl_loss<double>(student, sequences, teacher));
    REQUIRE(analytic.loss > 0.1);  // a random teacher: far from the minimum, so gradients are not tiny

    llama2::model probe = student;  // NOLINT(performance-unnecessary-copy-initialization): perturbed entry by entry
    std::mt19937_64 rng(77);
    const double h = 0x1.0p-13;
    double worst_ratio = 0.0;  // largest error / tolerance seen
    for (const tensor_ref& tensor : every_tensor(probe, analytic.gradients)) {
        const std::span<const double> gradient = tensor.gradient;
        const std::span<float> weights = tensor.weights;
        REQUIRE(gradient.size() == weights.size());
        std::vector<std::size_t> entries;
        entries.push_back(
            static_cast<std::size_t>(std::max_element(gradient.begin(), gradient.end(),
                                                      [](double a, double b) { return std::abs(a) < std::abs(b); }) -
                                     gradient.begin()));
        std::uniform_int_distribution<std::size_t> pick(0, gradient.size() - 1);
        for (int i = 0; i < samples; ++i) {
            entries.push_back(pick(rng));
        }
        for (const std::size_t e : entries) {
            const float original = weights[e];
            auto loss_at = [&](double step) {
                weights[e] = static_cast<float>(original + step);
                REQUIRE(static_cast<double>(weights[e]) == original + step);  // the step is exact
                return llama2::kl_loss<double>(probe, sequences, teacher);
            };
            const double d1 = (loss_at(h) - loss_at(-h)) / (2 * h);
            const double d2 = (loss_at(2 * h) - loss_at(-2 * h)) / (4 * h);
            weights[e] = original;
            const double numeric = (4 * d1 - d2) / 3;
            const double tolerance = 1e-7 * std::abs(numeric) + 1e-10;
            const double error = std::abs(gradient[e] - numeric);
            worst_ratio = std::max(worst_ratio, error / tolerance);
            CAPTURE(tensor.name, e, gradient[e], numeric, error);
            CHECK(error <= tolerance);
        }
    }
    // What the check needed, for the record (printed with -s).
    INFO("worst error / tolerance " << worst_ratio);
    CHECK(worst_ratio < 1.0);
}

}  // namespace

TEST_CASE("llama2_grad: forward_sequence equals session::forward", "[llama2_grad]") {
    for (const bool shared : {true, false}) {
        small_shape shape;
        shape.shared_classifier = shared;
        const llama2::model m = random_model(shared ? 1 : 2, shape);
        for (const std::vector<int>& tokens : random_sequences(3, shape.vocab, {16, 5, 1})) {
            CAPTURE(shared, tokens.size());
            CHECK(forward_mismatch<float>(m, tokens) <= 1e-4);
            CHECK(forward_mismatch<double>(m, tokens) <= 1e-4);
        }
        CHECK(llama2::forward_sequence<float>(m, std::vector<int>{}).empty());
    }
    if (!model_present()) {
        WARN("data absent (" << data_dir.string() << "): llama2_grad forward test on stories260K skipped");
        return;
    }
    // A whole seq_len sequence: every RoPE angle and the longest attention rows.
    const std::vector<int> tokens = llama2::sample_sequences(svq::test::stories_model(), 1, 512, 4, 1.0f).front();
    const double float_mismatch = forward_mismatch<float>(svq::test::stories_model(), tokens);
    const double double_mismatch = forward_mismatch<double>(svq::test::stories_model(), tokens);
    CAPTURE(float_mismatch, double_mismatch);
    CHECK(float_mismatch <= 1e-4);
    CHECK(double_mismatch <= 1e-4);
}

TEST_CASE("llama2_grad: gradients equal central finite differences (double)", "[llama2_grad]") {
    // Lengths: seq_len (the longest attention), a middle one, 2 (one position), 1 (none).
    const std::vector<int> lengths = {16, 9, 2, 1};
    SECTION("shared classifier") {
        const llama2::model student = random_model(10);
        const llama2::model teacher = random_model(11);
        check_gradients_by_finite_differences(student, teacher, random_sequences(12, 40, lengths), 6);
    }
    SECTION("separate classifier") {
        small_shape shape;
        shape.shared_classifier = false;
        const llama2::model student = random_model(20, shape);
        const llama2::model teacher = random_model(21, shape);
        check_gradients_by_finite_differences(student, teacher, random_sequences(22, 40, lengths), 3);
    }
}

TEST_CASE("llama2_grad: 1 and 2 threads give bit-identical loss and gradients", "[llama2_grad]") {
    auto check_threads = [](const llama2::model& student, const llama2::model& teacher_model,
                            const std::vector<std::vector<int>>& sequences) {
        const llama2::teacher_distributions teacher = llama2::make_teacher(teacher_model, sequences, 1);
        CHECK(llama2::make_teacher(teacher_model, sequences, 2).log_probs == teacher.log_probs);
        const auto one = llama2::kl_loss_gradients(student, sequences, teacher, {1, true});
        const auto two = llama2::kl_loss_gradients(student, sequences, teacher, {2, true});
        CHECK(one.positions == two.positions);
        CHECK(one.loss == two.loss);
        CHECK(one.loss > 0.0);
        CHECK(flatten(one.gradients) == flatten(two.gradients));
        CHECK(llama2::kl_loss(student, sequences, teacher, 1) == one.loss);
        CHECK(llama2::kl_loss(student, sequences, teacher, 2) == one.loss);
    };
    check_threads(random_model(30), random_model(31), random_sequences(32, 40, {16, 3, 11, 0, 16, 7, 2}));
    if (!model_present()) {
        WARN("data absent (" << data_dir.string() << "): llama2_grad thread test on stories260K skipped");
        return;
    }
    // The float model against a copy with one layer perturbed.
    llama2::model perturbed = svq::test::stories_model();
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<float> noise(-0.05f, 0.05f);
    for (float& w : perturbed.linear(1, llama2::linear_kind::w1).weights) {
        w += noise(rng);
    }
    check_threads(perturbed, svq::test::stories_model(), llama2::sample_sequences(svq::test::stories_model(), 5, 40, 6, 1.0f));
}

TEST_CASE("llama2_grad: a model against its own teacher has loss 0 and gradient ~0", "[llama2_grad]") {
    const llama2::model m = random_model(40);
    const auto sequences = random_sequences(41, 40, {16, 8, 12});
    // Against another teacher, for the scale of a gradient that is not 0.
    const auto other =
        llama2::kl_loss_gradients(m, sequences, llama2::make_teacher(random_model(42), sequences), {1, true});
    float other_max = 0.0f;
    for (const float g : flatten(other.gradients)) other_max = std::max(other_max, std::abs(g));
    REQUIRE(other_max > 1e-2f);

    const auto self_float =
        llama2::kl_loss_gradients<float>(m, sequences, llama2::make_teacher<float>(m, sequences), {1, true});
    const auto self_double =
        llama2::kl_loss_gradients<double>(m, sequences, llama2::make_teacher<double>(m, sequences), {1, true});
    CHECK(self_float.loss == 0.0);
    CHECK(self_double.loss == 0.0);
    // Teacher and student log-probabilities are bitwise equal, so d loss / d
    // logit_j = (sum P - 1) Q_j / positions: double rounding of sum P only.
    float float_max = 0.0f;
    for (const float g : flatten(self_float.gradients)) float_max = std::max(float_max, std::abs(g));
    double double_max = 0.0;
    for (const double g : flatten(self_double.gradients)) double_max = std::max(double_max, std::abs(g));
    CAPTURE(other_max, float_max, double_max);
    CHECK(float_max <= 1e-12f * other_max);
    CHECK(double_max <= 1e-12 * other_max);
}

TEST_CASE("llama2_grad: bad input throws invalid_argument with the value", "[llama2_grad]") {
    llama2::model m = random_model(50);
    const auto sequences = random_sequences(51, 40, {5, 16});
    const llama2::teacher_distributions teacher = llama2::make_teacher(m, sequences);
    auto message_of = [&](const std::vector<std::vector<int>>& batch, const llama2::teacher_distributions& t) {
        std::string gradient_message = invalid_argument_message([&] { (void)llama2::kl_loss_gradients(m, batch, t); });
        // The forward-only loss checks the same things.
        CHECK(invalid_argument_message([&] { (void)llama2::kl_loss(m, batch, t); }) == gradient_message);
        return gradient_message;
    };

    std::vector<std::vector<int>> too_long = sequences;
    too_long[1].push_back(3);
    CHECK(contains(message_of(too_long, teacher), "sequence 1 has 17 tokens, more than seq_len 16"));
    CHECK(contains(invalid_argument_message([&] { (void)llama2::make_teacher(m, too_long); }), "17 tokens"));
    CHECK(contains(invalid_argument_message([&] { (void)llama2::forward_sequence(m, too_long[1]); }),
                   "17 tokens, more than seq_len 16"));

    for (const int bad : {40, -1}) {
        std::vector<std::vector<int>> bad_token = sequences;
        bad_token[0][3] = bad;
        CHECK(contains(message_of(bad_token, teacher), fmt::format("sequence 0 holds token {} outside [0, 40)", bad)));
        CHECK(contains(invalid_argument_message([&] { (void)llama2::forward_sequence(m, bad_token[0]); }),
                       fmt::format("token {} at position 3 outside [0, 40)", bad)));
    }

    llama2::teacher_distributions short_row = teacher;
    short_row.log_probs[1].resize(short_row.log_probs[1].size() - 40);
    CHECK(contains(message_of(sequences, short_row),
                   "teacher sequence 1 has 560 log-probabilities, expected 600 (16 tokens: 15 positions x vocab 40)"));
    llama2::teacher_distributions missing = teacher;
    missing.log_probs.pop_back();
    CHECK(contains(message_of(sequences, missing), "teacher has 1 sequences, the batch 2"));
    llama2::teacher_distributions other_vocab = teacher;
    other_vocab.vocab_size = 41;
    CHECK(contains(message_of(sequences, other_vocab), "teacher vocab_size 41 differs from the model's vocab_size 40"));
    llama2::teacher_distributions not_a_number = teacher;
    not_a_number.log_probs[0][2 * 40 + 7] = std::nan("");
    CHECK(contains(message_of(sequences, not_a_number), "teacher sequence 0 position 2 token 7: log-probability nan"));

    // -inf is a valid log-probability (probability 0, contributing 0 log 0 = 0).
    llama2::teacher_distributions with_zero = teacher;
    with_zero.log_probs[1][3 * 40 + 5] = -std::numeric_limits<double>::infinity();
    const auto zero_result = llama2::kl_loss_gradients(m, sequences, with_zero);
    CHECK(std::isfinite(zero_result.loss));
    // Every other term is still p (log p - log p) = 0, but the mass is below 1, so the gradient is not 0.
    CHECK(zero_result.loss == 0.0);
    float largest = 0.0f;
    for (const float g : flatten(zero_result.gradients)) {
        REQUIRE(std::isfinite(g));
        largest = std::max(largest, std::abs(g));
    }
    CHECK(largest > 0.0f);

    CHECK(contains(invalid_argument_message([&] { (void)m.mutable_rms_att(2); }), "layer 2 outside [0, 2)"));
    CHECK(contains(invalid_argument_message([&] { (void)m.mutable_rms_ffn(-1); }), "layer -1 outside [0, 2)"));
}

TEST_CASE("llama2_grad: modified weights: loss is compare_models' KL, a gradient step lowers it",
          "[llama2_grad][data]") {
    if (!model_present()) {
        WARN("data absent (" << data_dir.string() << "): llama2_grad fine-tuning step test skipped");
        return;
    }
    const llama2::model& reference = svq::test::stories_model();
    const auto sequences = llama2::sample_sequences(reference, 3, 64, 8, 1.0f);
    const llama2::teacher_distributions teacher = llama2::make_teacher(reference, sequences);

    // A quantizer-like change written into a copy: noise on every linear layer and on the norms.
    llama2::model candidate = reference;
    std::mt19937_64 rng(9);
    std::uniform_real_distribution<float> noise(-0.02f, 0.02f);
    for (const llama2::linear_ref& linear : candidate.linears()) {
        for (float& w : linear.weights) w += noise(rng);
    }
    for (float& w : candidate.mutable_rms_ffn(3)) w *= 1.1f;

    const llama2::kl_gradient_result<float> result = llama2::kl_loss_gradients(candidate, sequences, teacher);
    const llama2::comparison compared = llama2::compare_models(reference, candidate, sequences);
    CAPTURE(result.loss, compared.mean_kl);
    CHECK(result.positions == compared.positions);
    // Same definition; only the float logits differ (GEMM vs matrix-vector sums).
    CHECK(std::abs(result.loss - compared.mean_kl) <= 1e-4 * compared.mean_kl);
    CHECK(result.gradients.token_embedding.empty());
    CHECK(result.gradients.classifier.empty());

    // One gradient-descent step on every linear and norm weight, sized so that
    // the first-order prediction of the change, -rate |g|^2, is 1% of the loss.
    const std::vector<float> all = flatten(result.gradients);
    double squared_norm = 0.0;
    for (const float g : all) squared_norm += static_cast<double>(g) * g;
    REQUIRE(squared_norm > 0.0);
    const double rate = 0.01 * result.loss / squared_norm;
    const double predicted = result.loss - rate * squared_norm;
    llama2::model stepped = candidate;
    auto step = [&](std::span<float> weights, const std::vector<float>& gradient) {
        REQUIRE(weights.size() == gradient.size());
        for (std::size_t j = 0; j < weights.size(); ++j) {
            weights[j] = static_cast<float>(weights[j] - rate * gradient[j]);
        }
    };
    const std::vector<llama2::linear_ref> linears = stepped.linears();
    for (std::size_t i = 0; i < linears.size(); ++i) {
        step(linears[i].weights, result.gradients.linears[i]);
    }
    for (int l = 0; l < stepped.config().n_layers; ++l) {
        step(stepped.mutable_rms_att(l), result.gradients.rms_att[static_cast<std::size_t>(l)]);
        step(stepped.mutable_rms_ffn(l), result.gradients.rms_ffn[static_cast<std::size_t>(l)]);
    }
    step(stepped.mutable_rms_final(), result.gradients.rms_final);
    const double after = llama2::kl_loss(stepped, sequences, teacher);
    CAPTURE(rate, predicted, after);
    CHECK(after < result.loss);
    // First order: the actual decrease is the predicted one up to the curvature term.
    CHECK(std::abs((result.loss - after) / (result.loss - predicted) - 1.0) < 0.2);
}
