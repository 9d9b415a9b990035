// Runs the llama2.c model stories260K in float32: real-text perplexity on
// tinystories_valid_sample.txt, perplexity on the sampled evaluation set,
// and a greedy story from BOS.
//
// usage: llama2_run [--model FILE.safetensors] [--tokenizer FILE] [data_dir]   (default: SVQ_DATA_DIR)
//
// --model runs a safetensors model instead of data_dir/stories260K.bin: the
// shipped models/stories260K/model.safetensors or an svq file made from it by
// `svq quantize` (its matrices decoded to floats), with the shipped tokenizer.
#include "common/args.hpp"
#include "common/llama2.hpp"
#include "common/llama2_safetensors.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>

int main(int argc, char** argv) try {
    namespace fs = std::filesystem;
    namespace llama2 = svq::llama2;
    fs::path data_dir = SVQ_DATA_DIR;
    fs::path safetensors_model;
    fs::path tokenizer_path;
    svq::examples::arg_parser args("llama2_run",
                                   "stories260K in float32: real-text and sampled-set perplexity, and a greedy story.");
    args.option("--model", "FILE", safetensors_model,
                "a .safetensors model (float, or an svq file from `svq quantize`) instead of data_dir/stories260K.bin")
        .option("--tokenizer", "FILE", tokenizer_path,
                "tokenizer (default: data_dir/tok512.bin)");
    args.positional("data_dir", data_dir,
                    "directory with stories260K.bin, tok512.bin and tinystories_valid_sample.txt");
    args.parse(argc, argv);
    const fs::path model_path = safetensors_model.empty() ? data_dir / "stories260K.bin" : safetensors_model;
    if (tokenizer_path.empty()) tokenizer_path = data_dir / "tok512.bin";
    const fs::path text_path = data_dir / "tinystories_valid_sample.txt";
    for (const fs::path& p : {model_path, tokenizer_path, text_path}) {
        if (!fs::exists(p)) {
            fmt::print("llama2_run: data absent ({} not found), nothing to do; skipped.\n", p.string());
            return 0;
        }
    }
    const llama2::model m =
        safetensors_model.empty() ? llama2::model::load(model_path) : llama2::load_safetensors(model_path);
    const llama2::tokenizer tok = llama2::tokenizer::load(tokenizer_path, m.config().vocab_size);
    const llama2::config& c = m.config();
    fmt::print(
        "model {}: dim {} hidden {} layers {} heads {} kv_heads {} vocab {} seq_len {} ({} classifier), "
        "{} parameters, {} linear layers\n",
        model_path.string(), c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len,
        c.shared_classifier ? "shared" : "separate", m.parameter_count(), m.linear_count());

    const auto documents = llama2::read_lines(text_path);
    const auto start = std::chrono::steady_clock::now();
    const llama2::perplexity_result r = llama2::evaluate_text(m, tok, documents);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print(
        "real text: {} documents, {} scored tokens, mean NLL {:.4f} nats, perplexity {:.3f} "
        "(reference 1.6848 / 5.391), {:.2f} s ({:.0f} tokens/s)\n",
        r.sequences, r.tokens, r.mean_nll, r.perplexity, seconds, static_cast<double>(r.tokens) / seconds);

    // The sampled evaluation set of docs/evaluation.md (64 x 256 tokens, seed 1, temperature 1).
    const auto sampled = llama2::sample_sequences(m, 64, 256, 1, 1.0f);
    const llama2::perplexity_result s = llama2::evaluate_sequences(m, sampled);
    fmt::print("sampled evaluation set (64 x 256, seed 1, T 1): {} scored tokens, mean NLL {:.4f}, perplexity {:.4f}\n",
               s.tokens, s.mean_nll, s.perplexity);

    const std::vector<int> story = llama2::generate_greedy(m, 61);
    fmt::print("greedy from BOS (60 tokens):\n{}\n", tok.decode(story));
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "llama2_run: %s\n", e.what());
    return 1;
}
