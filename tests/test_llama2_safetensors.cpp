// The llama2 runner on the shipped safetensors model (models/stories260K) and
// on an svq file made from it: the float file holds exactly the llama2.c
// checkpoint's weights (when SVQ_DATA_DIR has it), and the quantized file
// gives the same weights, logits and perplexity as the same matrices
// quantized in memory.
#include "common/llama2_safetensors.hpp"
#include "data_files.hpp"

#include <svq/io/quantized_file.hpp>
#include <svq/quantize.hpp>

#include "catch.hpp"

#include <algorithm>
#include <deque>
#include <filesystem>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace svq;

using svq::test::data_dir;
const fs::path shipped = fs::path(SVQ_SOURCE_DIR) / "models" / "stories260K";

}  // namespace

TEST_CASE("llama2 from the shipped safetensors equals the llama2.c checkpoint", "[llama2][safetensors]") {
    const llama2::model m = llama2::load_safetensors(shipped / "model.safetensors");
    const llama2::config& c = m.config();
    CHECK(c.dim == 64);
    CHECK(c.hidden_dim == 172);
    CHECK(c.n_layers == 5);
    CHECK(c.n_heads == 8);
    CHECK(c.n_kv_heads == 4);
    CHECK(c.vocab_size == 512);
    CHECK(c.seq_len == 512);
    CHECK(c.shared_classifier);
    if (!fs::exists(data_dir / "stories260K.bin")) {
        WARN("data absent (" << data_dir.string() << "): comparison with the llama2.c checkpoint skipped");
        return;
    }
    const llama2::model legacy = llama2::model::load(data_dir / "stories260K.bin");
    CHECK(std::ranges::equal(m.token_embedding(), legacy.token_embedding()));
    CHECK(std::ranges::equal(m.rms_final(), legacy.rms_final()));
    for (int l = 0; l < c.n_layers; ++l) {
        CHECK(m.layer(l).rms_att == legacy.layer(l).rms_att);
        CHECK(m.layer(l).rms_ffn == legacy.layer(l).rms_ffn);
        for (const llama2::linear_kind k : llama2::all_linear_kinds) CHECK(m.layer(l).linear(k) == legacy.layer(l).linear(k));
    }
}

TEST_CASE("llama2 from an svq file has the perplexity of the same model quantized in memory", "[llama2][safetensors]") {
    const fs::path float_file = shipped / "model.safetensors";
    llama2::model in_memory = llama2::load_safetensors(float_file);
    const llama2::config c = in_memory.config();

    // What `svq quantize --bpw 3.25` writes: every matrix (the embedding too)
    // quantized to <= 3.25 bpw, the norms kept, the configuration in the metadata.
    const safetensors_file source = safetensors_file::open(float_file);
    model_writer writer;
    for (const auto& [key, value] : source.metadata()) writer.set_metadata(key, value);
    std::deque<quantized_matrix> keep;
    for (const tensor_info& t : source.tensors()) {
        const std::vector<float> w = source.to_float(t.name);
        if (t.shape.size() != 2) {
            writer.add_tensor(t.name, w, t.shape);
            continue;
        }
        keep.push_back(quantize(w, t.shape[0], t.shape[1], {.target_bpw = 3.25, .threads = 2}));
        writer.add(t.name, keep.back());
        const std::vector<float> back = keep.back().dequantize();
        // The same reconstruction, stored in the in-memory model.
        if (t.name == "model.embed_tokens.weight") {
            std::ranges::copy(back, in_memory.mutable_token_embedding().begin());
        } else {
            bool found = false;
            for (llama2::linear_ref& ref : in_memory.linears())
                if (llama2::hf_linear_name(ref.layer, ref.kind) == t.name) {
                    std::ranges::copy(back, ref.weights.begin());
                    found = true;
                }
            REQUIRE(found);
        }
    }
    CHECK(keep.size() == 36);
    const fs::path file = fs::temp_directory_path() / "svq_test_llama2_safetensors.svq.safetensors";
    writer.write(file);
    const llama2::model loaded = llama2::load_safetensors(file);
    fs::remove(file);

    CHECK(std::ranges::equal(loaded.token_embedding(), in_memory.token_embedding()));
    for (int l = 0; l < c.n_layers; ++l)
        for (const llama2::linear_kind k : llama2::all_linear_kinds)
            CHECK(loaded.layer(l).linear(k) == in_memory.layer(l).linear(k));

    // Perplexity on sequences the float model samples (no data needed), and on
    // real text when SVQ_DATA_DIR has it: equal to the last bit.
    const llama2::model reference = llama2::load_safetensors(float_file);
    const auto sequences = llama2::sample_sequences(reference, 4, 64, 7, 1.0f);
    const llama2::perplexity_result a = llama2::evaluate_sequences(loaded, sequences);
    const llama2::perplexity_result b = llama2::evaluate_sequences(in_memory, sequences);
    CHECK(a.mean_nll == b.mean_nll);
    CHECK(a.tokens == b.tokens);
    const llama2::perplexity_result f = llama2::evaluate_sequences(reference, sequences);
    CHECK(a.mean_nll > f.mean_nll);  // quantization costs something
    CHECK(a.perplexity < 1.5 * f.perplexity);  // but not much at 3.25 bpw

    const fs::path text = data_dir / "tinystories_valid_sample.txt";
    if (!fs::exists(text) || !fs::exists(data_dir / "tok512.bin")) {
        WARN("data absent (" << data_dir.string() << "): real-text perplexity of the svq file skipped");
        return;
    }
    const llama2::tokenizer tok = llama2::tokenizer::load(data_dir / "tok512.bin", c.vocab_size);
    const std::vector<std::string> documents = llama2::read_lines(text);
    const llama2::perplexity_result ta = llama2::evaluate_text(loaded, tok, documents);
    const llama2::perplexity_result tb = llama2::evaluate_text(in_memory, tok, documents);
    const llama2::perplexity_result tf = llama2::evaluate_text(reference, tok, documents);
    CHECK(ta.mean_nll == tb.mean_nll);
    CHECK(tf.perplexity == Approx(5.391).epsilon(1e-3));  // the float model's reference figure
    WARN("real-text perplexity: float " << tf.perplexity << ", svq file at 3.25 bpw " << ta.perplexity);
}
