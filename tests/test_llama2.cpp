#include "catch.hpp"

#include "common/llama2.hpp"
#include "data_files.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
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
const fs::path tokenizer_path = data_dir / "tok512.bin";
const fs::path text_path = data_dir / "tinystories_valid_sample.txt";

bool model_text_present() {
    return fs::exists(stories_model_path) && fs::exists(tokenizer_path) && fs::exists(text_path);
}

// The real tokenizer, loaded once per test process (the model: svq::test::stories_model).
const llama2::tokenizer& real_tokenizer() {
    static const llama2::tokenizer t = llama2::tokenizer::load(tokenizer_path, 512);
    return t;
}

// A file in the temp directory, removed when the test ends.
class temp_file {
public:
    explicit temp_file(const std::string& stem) {
        std::random_device entropy;  // only to avoid clashing with a parallel run
        path_ = fs::temp_directory_path() / fmt::format("svq_test_llama2_{}_{:08x}.bin", stem, entropy());
    }
    ~temp_file() {
        std::error_code ignored;
        fs::remove(path_, ignored);
    }
    temp_file(const temp_file&) = delete;
    temp_file& operator=(const temp_file&) = delete;
    void write(const std::vector<char>& bytes) const {
        std::ofstream out(path_, std::ios::binary);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    [[nodiscard]] const fs::path& path() const noexcept { return path_; }

private:
    fs::path path_;
};

// The message of the svq::error that `action` throws, or "" when it throws none.
template <class Action>
std::string error_message(Action&& action) {
    try {
        action();
    } catch (const svq::error& e) {
        return e.what();
    }
    return "";
}

std::vector<char> file_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void put_int(std::vector<char>& bytes, std::int32_t v) {
    const char* p = reinterpret_cast<const char*>(&v);
    bytes.insert(bytes.end(), p, p + 4);
}
void put_float(std::vector<char>& bytes, float v) {
    const char* p = reinterpret_cast<const char*>(&v);
    bytes.insert(bytes.end(), p, p + 4);
}

// A random llama2.c legacy checkpoint with a separate classifier (negative
// vocab_size in the header): dim 8, hidden 12, 2 layers, 2 heads, 1 KV head,
// vocab 16, seq_len 8. Stored RoPE tables are the exact ones (double math).
std::vector<char> synthetic_checkpoint(std::uint64_t seed) {
    constexpr int dim = 8, hidden = 12, layers = 2, heads = 2, kv_heads = 1, vocab = 16, seq_len = 8;
    constexpr int kv_dim = dim * kv_heads / heads, head_size = dim / heads;
    std::vector<char> bytes;
    for (const int v : {dim, hidden, layers, heads, kv_heads, -vocab, seq_len}) {
        put_int(bytes, v);
    }
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> uniform(-0.5f, 0.5f);
    auto put_random = [&](int count) {
        for (int i = 0; i < count; ++i) {
            put_float(bytes, uniform(rng));
        }
    };
    auto put_ones = [&](int count) {
        for (int i = 0; i < count; ++i) {
            put_float(bytes, 1.0f);
        }
    };
    put_random(vocab * dim);
    put_ones(layers * dim);
    put_random(layers * dim * dim);
    put_random(layers * kv_dim * dim);
    put_random(layers * kv_dim * dim);
    put_random(layers * dim * dim);
    put_ones(layers * dim);
    put_random(layers * hidden * dim);
    put_random(layers * dim * hidden);
    put_random(layers * hidden * dim);
    put_ones(dim);
    for (const bool imaginary : {false, true}) {
        for (int pos = 0; pos < seq_len; ++pos) {
            for (int pair = 0; pair < head_size / 2; ++pair) {
                const double angle = pos * std::pow(10000.0, -2.0 * pair / head_size);
                put_float(bytes, static_cast<float>(imaginary ? std::sin(angle) : std::cos(angle)));
            }
        }
    }
    put_random(vocab * dim);  // classifier
    return bytes;
}

}  // namespace

TEST_CASE("llama2 loader rejects bad checkpoints with the offending values", "[llama2]") {
    SECTION("missing file -> io_error") {
        REQUIRE_THROWS_AS(llama2::model::load(data_dir / "no_such_model.bin"), svq::io_error);
        REQUIRE_THROWS_AS(llama2::tokenizer::load(data_dir / "no_such_tokenizer.bin", 512), svq::io_error);
        REQUIRE_THROWS_AS(llama2::read_lines(data_dir / "no_such_text.txt"), svq::io_error);
    }
    const std::vector<char> good = synthetic_checkpoint(11);
    SECTION("synthetic checkpoint with a separate classifier loads") {
        temp_file file("synthetic");
        file.write(good);
        const llama2::model m = llama2::model::load(file.path());
        CHECK(m.config().dim == 8);
        CHECK(m.config().vocab_size == 16);
        CHECK_FALSE(m.config().shared_classifier);
        CHECK(m.classifier().data() != m.token_embedding().data());
        CHECK(m.linear_count() == 14);
        // The stored tables hold the exact RoPE angles; run.c's float recomputation agrees.
        REQUIRE(m.rope_cos().size() == m.stored_freq_cis_real().size());
        for (std::size_t i = 0; i < m.rope_cos().size(); ++i) {
            CHECK(std::abs(m.rope_cos()[i] - m.stored_freq_cis_real()[i]) < 1e-6f);
            CHECK(std::abs(m.rope_sin()[i] - m.stored_freq_cis_imag()[i]) < 1e-6f);
        }
        llama2::session s(m);
        const auto logits = s.forward(3, 0);
        REQUIRE(logits.size() == 16);
        for (const float l : logits) {
            CHECK(std::isfinite(l));
        }
        // Positions must be fed in order.
        REQUIRE_THROWS_AS(s.forward(3, 2), svq::invalid_argument);
        REQUIRE_THROWS_AS(s.forward(16, 1), svq::invalid_argument);
        REQUIRE_THROWS_AS(s.forward(-1, 1), svq::invalid_argument);
    }
    SECTION("truncated checkpoint -> corrupt_data naming both sizes") {
        temp_file file("truncated");
        std::vector<char> truncated(good.begin(), good.end() - 4);
        file.write(truncated);
        const std::string expected = std::to_string(good.size());
        const std::string actual = std::to_string(truncated.size());
        REQUIRE_THROWS_AS(llama2::model::load(file.path()), svq::corrupt_data);
        const std::string message = error_message([&] { (void)llama2::model::load(file.path()); });
        CAPTURE(message);
        CHECK(contains(message, "expected " + expected + " bytes"));
        CHECK(contains(message, "file has " + actual + " bytes"));
    }
    SECTION("trailing bytes -> corrupt_data") {
        temp_file file("trailing");
        std::vector<char> longer = good;
        put_float(longer, 0.0f);
        file.write(longer);
        REQUIRE_THROWS_AS(llama2::model::load(file.path()), svq::corrupt_data);
    }
    SECTION("insane headers -> corrupt_data") {
        struct bad_header {
            int field;
            std::int32_t value;
            const char* message;
        };
        for (const bad_header& bad : {bad_header{0, -64, "dim = -64"}, bad_header{2, 0, "n_layers = 0"},
                                      bad_header{3, 3, "dim = 8 is not a multiple of n_heads = 3"},
                                      bad_header{4, 3, "n_kv_heads = 3"}, bad_header{6, -1, "seq_len = -1"}}) {
            temp_file file("header");
            std::vector<char> bytes = good;
            std::memcpy(bytes.data() + std::size_t{4} * static_cast<std::size_t>(bad.field), &bad.value, 4);
            file.write(bytes);
            CAPTURE(bad.field, bad.value);
            REQUIRE_THROWS_AS(llama2::model::load(file.path()), svq::corrupt_data);
            const std::string message = error_message([&] { (void)llama2::model::load(file.path()); });
            CAPTURE(message);
            CHECK(contains(message, bad.message));
        }
        temp_file tiny("tiny");
        tiny.write(std::vector<char>(10, 0));
        REQUIRE_THROWS_AS(llama2::model::load(tiny.path()), svq::corrupt_data);
    }
    SECTION("non-finite weight -> corrupt_data") {
        temp_file file("nan");
        std::vector<char> bytes = good;
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::memcpy(bytes.data() + std::size_t{28 + 4 * 5}, &nan, 4);
        file.write(bytes);
        REQUIRE_THROWS_AS(llama2::model::load(file.path()), svq::corrupt_data);
        CHECK(contains(error_message([&] { (void)llama2::model::load(file.path()); }), "token_embedding element 5"));
    }
}

TEST_CASE("llama2 real checkpoint: truncated copy and bad tokenizer files are rejected", "[llama2][data]") {
    if (!model_text_present()) {
        WARN("data absent (" << data_dir.string() << "): llama2 real-checkpoint error tests skipped");
        return;
    }
    const std::vector<char> bytes = file_bytes(stories_model_path);
    REQUIRE(bytes.size() == 28 + 4 * 264128);
    temp_file truncated("real_truncated");
    truncated.write(std::vector<char>(bytes.begin(), bytes.begin() + 1000000));
    REQUIRE_THROWS_AS(llama2::model::load(truncated.path()), svq::corrupt_data);
    const std::string message = error_message([&] { (void)llama2::model::load(truncated.path()); });
    CAPTURE(message);
    CHECK(contains(message, "expected 1056540 bytes"));
    CHECK(contains(message, "file has 1000000 bytes"));

    const std::vector<char> tok_bytes = file_bytes(tokenizer_path);
    temp_file tok_truncated("tok_truncated");
    tok_truncated.write(std::vector<char>(tok_bytes.begin(), tok_bytes.end() - 1));
    REQUIRE_THROWS_AS(llama2::tokenizer::load(tok_truncated.path(), 512), svq::corrupt_data);
    // Fewer tokens than the file holds leaves bytes over.
    REQUIRE_THROWS_AS(llama2::tokenizer::load(tokenizer_path, 511), svq::corrupt_data);
    CHECK(contains(error_message([&] { (void)llama2::tokenizer::load(tokenizer_path, 511); }),
                   "bytes after the 511 tokens"));
}

TEST_CASE("llama2 float model reproduces the reference real-text perplexity", "[llama2][data]") {
    if (!model_text_present()) {
        WARN("data absent (" << data_dir.string() << "): llama2 perplexity test skipped");
        return;
    }
    const llama2::model& m = svq::test::stories_model();
    const llama2::config& c = m.config();
    CHECK(c.dim == 64);
    CHECK(c.hidden_dim == 172);
    CHECK(c.n_layers == 5);
    CHECK(c.n_heads == 8);
    CHECK(c.n_kv_heads == 4);
    CHECK(c.vocab_size == 512);
    CHECK(c.seq_len == 512);
    CHECK(c.shared_classifier);
    CHECK(m.parameter_count() == 264128 - 2 * 512 * 4);
    // run.c's computed RoPE and the checkpoint's stored tables agree to float rounding.
    for (std::size_t i = 0; i < m.rope_cos().size(); ++i) {
        REQUIRE(std::abs(m.rope_cos()[i] - m.stored_freq_cis_real()[i]) < 1e-6f);
        REQUIRE(std::abs(m.rope_sin()[i] - m.stored_freq_cis_imag()[i]) < 1e-6f);
    }

    const std::vector<std::string> documents = llama2::read_lines(text_path);
    REQUIRE(documents.size() == 8);
    const llama2::perplexity_result r = llama2::evaluate_text(m, real_tokenizer(), documents);
    CHECK(r.sequences == 8);
    CHECK(r.tokens == 3949);
    CAPTURE(r.mean_nll, r.perplexity);
    CHECK(std::abs(r.mean_nll - 1.6848) < 1e-3);
    CHECK(std::abs(r.perplexity - 5.391) < 1e-3);
    CHECK(std::abs(r.perplexity - std::exp(r.mean_nll)) < 1e-12);
}

TEST_CASE("llama2 greedy decoding from BOS tells the reference story", "[llama2][data]") {
    if (!model_text_present()) {
        WARN("data absent (" << data_dir.string() << "): llama2 greedy decoding test skipped");
        return;
    }
    const std::vector<int> tokens = llama2::generate_greedy(svq::test::stories_model(), 40);
    REQUIRE(tokens.size() == 40);
    CHECK(tokens.front() == llama2::bos_token);
    const std::string text = real_tokenizer().decode(tokens);
    const std::string first_sentence =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";
    CAPTURE(text);
    REQUIRE(text.substr(0, first_sentence.size()) == first_sentence);
    // Temperature 0 sampling is the same greedy path.
    CHECK(llama2::sample_sequences(svq::test::stories_model(), 2, 40, 99, 0.0f) == std::vector<std::vector<int>>{tokens, tokens});
}

TEST_CASE("llama2 tokenizer matches run.c encode/decode", "[llama2][data]") {
    if (!model_text_present()) {
        WARN("data absent (" << data_dir.string() << "): llama2 tokenizer test skipped");
        return;
    }
    const llama2::tokenizer& tok = real_tokenizer();
    CHECK(tok.vocab_size() == 512);
    CHECK(tok.max_token_length() == 7);
    CHECK(tok.has_byte_fallback());
    CHECK(tok.piece(llama2::bos_token) == "\n<s>\n");
    CHECK(tok.piece(llama2::eos_token) == "\n</s>\n");
    CHECK(tok.piece(3) == "<0x00>");
    CHECK(tok.piece(258) == "<0xFF>");
    // Ids read off the vocabulary: the first merges follow the 256 byte
    // tokens (" t" = 259, "he" = 260, " a" = 261); " " is 410.
    CHECK(tok.lookup(" t") == 259);
    CHECK(tok.lookup(" a") == 261);
    CHECK(tok.lookup(" ") == 410);
    CHECK(tok.lookup("no such piece") == -1);

    using ids = std::vector<int>;
    CHECK(tok.encode("", true, false) == ids{1});
    CHECK(tok.encode("", false, false).empty());
    CHECK(tok.encode("", true, true) == ids{1, 2});
    // Dummy prefix " " (410) + "a" merge into " a" (261).
    CHECK(tok.encode("a", true, false) == ids{1, 261});
    CHECK(tok.encode("a", false, true) == ids{261, 2});
    CHECK(tok.encode("Once upon a time", true, false) ==
          ids{1, tok.lookup(" Once"), tok.lookup(" upon"), 261, tok.lookup(" time")});
    CHECK(tok.encode("Once upon a time", true, false) == ids{1, 403, 407, 261, 378});
    // A newline is not a piece: byte fallback gives 0x0A + 3 = 13, and " \n" is no merge.
    CHECK(tok.encode("\n", true, false) == ids{1, 410, 13});
    // U+1F600 (F0 9F 98 80) is not in the vocabulary: four byte tokens, byte + 3.
    CHECK(tok.encode("\xF0\x9F\x98\x80", false, false) == ids{410, 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3});
    // A two-byte code point that is a piece stays one token.
    CHECK(tok.encode("\xC3\xA9", false, false) == ids{410, tok.lookup("\xC3\xA9")});
    CHECK(tok.lookup("\xC3\xA9") >= 0);

    // decode strips the leading space right after BOS and turns byte tokens into bytes.
    CHECK(tok.decode(1, 403) == "Once");
    CHECK(tok.decode(403, 407) == " upon");
    CHECK(tok.decode(410, 13) == "\n");
    CHECK(tok.decode(1, 0xF0 + 3) == "\xF0");

    // Round trip on every line of the real text, and the encoded lengths the reference relies on.
    const std::vector<std::string> documents = llama2::read_lines(text_path);
    std::size_t total = 0;
    for (const std::string& document : documents) {
        const std::vector<int> tokens = tok.encode(document, true, false);
        CHECK(tok.decode(tokens) == document);
        total += std::min<std::size_t>(tokens.size(), 512);
    }
    CHECK(total == 3949 + 8);
    const std::string mixed = "Tom said: \"Hi!\"\n\tcafé 😀 ~[x]";
    CHECK(tok.decode(tok.encode(mixed, true, true)) == mixed);
}

TEST_CASE("llama2 compare_models: a copy agrees exactly, a perturbed layer does not", "[llama2][data]") {
    if (!model_text_present()) {
        WARN("data absent (" << data_dir.string() << "): llama2 compare_models test skipped");
        return;
    }
    const llama2::model& m = svq::test::stories_model();
    const auto sequences = llama2::sample_sequences(m, 4, 48, 5, 1.0f);

    const llama2::model copy = m;  // NOLINT(performance-unnecessary-copy-initialization): the copy is the subject
    const llama2::comparison same = llama2::compare_models(m, copy, sequences);
    CHECK(same.positions == std::size_t{4 * 47});
    CHECK(same.mean_kl == 0.0);
    CHECK(same.max_kl == 0.0);
    CHECK(same.top1_agreement == 1.0);
    CHECK(same.reference.perplexity == same.candidate.perplexity);
    CHECK(same.relative_perplexity_increase() == 0.0);
    // Its perplexity is the one evaluate_sequences reports.
    const llama2::perplexity_result direct = llama2::evaluate_sequences(m, sequences);
    CHECK(direct.tokens == same.positions);
    CHECK(std::abs(direct.mean_nll - same.reference.mean_nll) < 1e-12);

    llama2::model perturbed = m;
    const llama2::linear_ref wo = perturbed.linear(2, llama2::linear_kind::wo);
    CHECK(wo.name == "layers.2.wo");
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<float> noise(-0.1f, 0.1f);
    for (float& w : wo.weights) {
        w += noise(rng);
    }
    // The copy is independent of the original.
    CHECK(m.linear(2, llama2::linear_kind::wo).weights[0] != wo.weights[0]);
    const llama2::comparison different = llama2::compare_models(m, perturbed, sequences);
    CHECK(different.mean_kl > 0.0);
    CHECK(different.max_kl >= different.mean_kl);
    CHECK(different.top1_agreement <= 1.0);
    CHECK(different.top1_agreement > 0.5);
    CHECK(different.reference.perplexity == same.reference.perplexity);
    CHECK(different.candidate.perplexity != different.reference.perplexity);

    // Zeroing every linear layer through linears() wrecks the model.
    llama2::model zeroed = m;
    for (const llama2::linear_ref& linear : zeroed.linears()) {
        std::fill(linear.weights.begin(), linear.weights.end(), 0.0f);
    }
    const llama2::comparison wrecked = llama2::compare_models(m, zeroed, sequences);
    CHECK(wrecked.mean_kl > different.mean_kl);
    CHECK(wrecked.candidate.perplexity > 2 * wrecked.reference.perplexity);
}

TEST_CASE("llama2 sample_sequences is deterministic per seed", "[llama2][data]") {
    if (!model_text_present()) {
        WARN("data absent (" << data_dir.string() << "): llama2 sampling test skipped");
        return;
    }
    const llama2::model& m = svq::test::stories_model();
    const auto first = llama2::sample_sequences(m, 3, 32, 1, 1.0f);
    const auto again = llama2::sample_sequences(m, 3, 32, 1, 1.0f);
    const auto other = llama2::sample_sequences(m, 3, 32, 2, 1.0f);
    REQUIRE(first.size() == 3);
    for (const auto& sequence : first) {
        REQUIRE(sequence.size() == 32);
        CHECK(sequence.front() == llama2::bos_token);
    }
    CHECK(first == again);
    CHECK(first != other);
    CHECK(first[0] != first[1]);  // one stream across sequences, not one reseed per sequence
    CHECK(llama2::sample_sequences(m, 0, 32, 1, 1.0f).empty());
    REQUIRE_THROWS_AS(llama2::sample_sequences(m, 1, 513, 1, 1.0f), svq::invalid_argument);
    REQUIRE_THROWS_AS(llama2::sample_sequences(m, 1, 0, 1, 1.0f), svq::invalid_argument);
    REQUIRE_THROWS_AS(llama2::sample_sequences(m, 1, 8, 1, -1.0f), svq::invalid_argument);
}

TEST_CASE("llama2 activation hook sees every linear input once per token", "[llama2][data]") {
    if (!model_text_present()) {
        WARN("data absent (" << data_dir.string() << "): llama2 activation hook test skipped");
        return;
    }
    const llama2::model& m = svq::test::stories_model();
    const std::vector<std::vector<int>> sequences = {{1, 403, 407, 261, 378}, {1, 317}};
    const std::size_t token_count = 7;
    std::vector<std::size_t> calls(m.linear_count(), 0);
    std::vector<float> first_wq_input;
    std::vector<float> first_wk_input;
    llama2::collect_activations(m, sequences, [&](const llama2::linear_info& info, std::span<const float> input) {
        REQUIRE(info.index < calls.size());
        REQUIRE(input.size() == static_cast<std::size_t>(info.cols));
        ++calls[info.index];
        if (info.layer == 0 && calls[info.index] == 1 && info.kind == llama2::linear_kind::wq) {
            first_wq_input.assign(input.begin(), input.end());
        }
        if (info.layer == 0 && calls[info.index] == 1 && info.kind == llama2::linear_kind::wk) {
            first_wk_input.assign(input.begin(), input.end());
        }
    });
    for (const llama2::linear_info& info : m.linear_infos()) {
        CAPTURE(info.name);
        CHECK(calls[info.index] == token_count);
    }
    // wq and wk share their input: RMSNorm(embedding[BOS]) * rms_att of layer 0.
    const auto embedding = m.token_embedding().subspan(static_cast<std::size_t>(llama2::bos_token) * 64, 64);
    double sum_squares = 0.0;
    for (const float v : embedding) {
        sum_squares += static_cast<double>(v) * v;
    }
    const double inv_rms = 1.0 / std::sqrt(sum_squares / 64 + 1e-5);
    REQUIRE(first_wq_input.size() == 64);
    CHECK(first_wk_input == first_wq_input);
    for (std::size_t j = 0; j < 64; ++j) {
        const double expected = m.layer(0).rms_att[j] * embedding[j] * inv_rms;
        CHECK(std::abs(first_wq_input[j] - expected) <= 1e-5 * std::abs(expected) + 1e-7);
    }

    // Shapes of the enumerated linears.
    const auto views = m.linears();
    REQUIRE(views.size() == 35);
    CHECK(views[12].name == "layers.1.w2");
    CHECK(views[12].rows == 64);
    CHECK(views[12].cols == 172);
    CHECK(views[8].name == "layers.1.wk");
    CHECK(views[8].rows == 32);
    for (const llama2::linear_view& view : views) {
        CHECK(view.weights.size() == static_cast<std::size_t>(view.rows) * static_cast<std::size_t>(view.cols));
    }
}
