// End-to-end evaluation: every linear layer of stories260K (wq wk wv wo w1 w2
// w3 of all 5 blocks) quantized with RTN, GPTQ-RTN, plain PVQ, Hessian PVQ,
// Hessian PVQ with mixed precision across matrices (pvq-hessian-mix, and
// pvq-hessian-mix-seq with sequential drift-corrected calibration: the
// library's svq::hessian_mix), the latter fine-tuned against the float model
// (pvq-tuned: svq::tune_quantized with the llama2 objective of
// common/finetune.hpp)
// and CRVQ (k-means and PVQ base) at several bpw, and the quantized model compared with the float one
// (protocol and figures: docs/evaluation.md).
//
//   model_eval [--data DIR] [--json FILE] [--seed S] [--sequences S] [--length L]
//              [--calibration C] [--targets 2,2.5,3,3.25,4] [--methods rtn,pvq,...]
//              [--embedding] [--damping D] [--threads T] [--layers]
//              [--tune-steps N] [--tune-batch B] [--tune-lr R] [--tune-embedding] [--tune-scales]
//
// Columns: bpw = every stored bit / quantized weights (over all quantized
// matrices); ppl on the real text (README protocol) and on the sampled
// evaluation set; relative real-text perplexity increase; mean KL(float ||
// quantized) of the next-token distributions and top-1 agreement on the
// sampled set. Without the data files it says so and exits 0.
//
// To add a method, push one more model_eval::method into `methods`: a name and
// a layer_quantizer (W, H, target -> reconstruction, stored bits), or a
// model_quantizer over all layers at once (shared bits counted once), as the
// CRVQ rows do, or a calibrated_quantizer that may also run the float model
// on the calibration set, as pvq-hessian-mix does.
#include <common/args.hpp>
#include <common/finetune.hpp>
#include <common/json.hpp>
#include <common/model_eval.hpp>

#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace me = svq::model_eval;

struct options {
    me::run_options run;
    me::tune_options tune;
    std::optional<std::string> json;
    bool print_layers = false;
};

options parse(int argc, char** argv) {
    using svq::examples::bounds;
    options o;
    o.run.data_dir = SVQ_DATA_DIR;
    const bounds count = bounds::closed(1, 1 << 20);
    svq::examples::arg_parser p("model_eval",
                                "stories260K with every linear layer quantized by each method at each target bpw,\n"
                                "compared with the float model (docs/evaluation.md). Methods: rtn, gptq-rtn, pvq, trellis,\n"
                                "pvq-hessian, pvq-hessian-mix, pvq-hessian-mix-seq, pvq-tuned, crvq-kmeans, crvq-pvq.");
    p.data_option(o.run.data_dir, "stories260K.bin, tok512.bin and tinystories_valid_sample.txt")
        .json_option(o.json, "the table")
        .option("--seed", "S", o.run.seed, "seed of the sampled evaluation set")
        .option("--sequences", "S", o.run.sequences, "sampled evaluation sequences", count)
        .option("--length", "L", o.run.length, "tokens per sampled sequence", count)
        .option("--calibration", "C", o.run.calibration_sequences, "sampled calibration sequences", count)
        .option("--calibration-temperature", "T", o.run.calibration_temperature,
                "sampling temperature of the calibration set", bounds::open_closed(0.0, 4.0))
        .option("--targets", "2,2.5,...", o.run.targets, "target bits per weight")
        .option("--methods", "rtn,pvq,...", o.run.methods, "methods to run (default: all)")
        .flag("--embedding", o.run.embedding, "also rows with the token embedding quantized")
        .option("--damping", "D", o.run.damping, "Hessian damping, a fraction of mean(diag H)")
        .option("--threads", "T", o.run.threads, "threads", count)
        .flag("--layers", o.print_layers, "print each row's per-layer configurations")
        .option("--tune-steps", "N", o.tune.steps, "pvq-tuned: optimizer steps", count)
        .option("--tune-batch", "B", o.tune.batch, "pvq-tuned: calibration sequences per step", count)
        .option("--tune-lr", "R", o.tune.weight_lr, "pvq-tuned: step of the latent weights", bounds::open(0.0, 1.0))
        .flag("--tune-embedding", o.tune.tune_embedding, "pvq-tuned: also tune the float token embedding")
        .flag("--tune-scales", o.tune.keep_row_scales, "pvq-tuned: re-plan the row scales at every step", false);
    p.parse(argc, argv);
    return o;
}

std::string row_name(const me::table_row& r) { return r.embedding ? r.method + "+emb" : r.method; }

void print_header() {
    fmt::print("{:<16} {:>6} {:>7} {:>9} {:>9} {:>8} {:>8} {:>9} {:>7} {:>7}\n", "method", "target", "bpw", "ppl real",
               "ppl samp", "rel real", "rel samp", "KL samp", "top-1", "sec");
}

void print_row(const me::table_row& r) {
    fmt::print("{:<16} {:>6} {:>7.4f} {:>9.4f} {:>9.4f} {:>+7.2f}% {:>+7.2f}% {:>9.5f} {:>7.4f} {:>7.1f}\n", row_name(r),
               r.method == "float" ? std::string("-") : fmt::format("{:.2f}", r.target_bpw), r.bpw, r.real.perplexity,
               r.sampled.perplexity, 100.0 * r.rel_real, 100.0 * r.rel_sampled, r.sampled.mean_kl, r.sampled.top1,
               r.quantize_seconds);
    std::fflush(stdout);
}

const me::table_row* find(const me::table& t, std::string_view method, double target) {
    for (const me::table_row& r : t.rows)
        if (r.method == method && r.target_bpw == target && !r.embedding) return &r;
    return nullptr;
}

// The acceptance checks of issue 7, on whatever rows this run has.
void print_summary(const me::table& t) {
    const auto rtn_like = [](const me::table_row& r) {
        return !r.embedding && (r.method == "rtn" || r.method == "gptq-rtn");
    };
    const auto svq_like = [](const me::table_row& r) {
        return !r.embedding && r.method != "float" && r.method != "rtn" && r.method != "gptq-rtn";
    };
    fmt::print("\nsummary\n");
    // 3.25 bpw: the svq method with the lowest KL.
    const me::table_row* best = nullptr;
    for (const me::table_row& r : t.rows)
        if (svq_like(r) && r.target_bpw == 3.25 && (best == nullptr || r.sampled.mean_kl < best->sampled.mean_kl))
            best = &r;
    if (best != nullptr) {
        fmt::print("3.25 bpw: best svq method by KL: {} at {:.4f} bpw, real ppl {:.4f} ({:+.2f}% vs float, limit +5%): {}\n",
                   best->method, best->bpw, best->real.perplexity, 100.0 * best->rel_real,
                   best->rel_real <= 0.05 ? "PASS" : "FAIL");
        for (const me::table_row& r : t.rows) {
            // RTN rows at the same target and every RTN row with at least the svq row's bits.
            if (!rtn_like(r) || (r.bpw < best->bpw && r.target_bpw != 3.25)) continue;
            fmt::print("  vs {} at target {:.2f} ({:.4f} bpw): KL {:.5f} vs {:.5f} ({:.2f}x): {}\n", r.method,
                       r.target_bpw, r.bpw, best->sampled.mean_kl, r.sampled.mean_kl,
                       r.sampled.mean_kl / best->sampled.mean_kl, best->sampled.mean_kl < r.sampled.mean_kl ? "PASS" : "FAIL");
        }
    }
    if (const me::table_row* h = find(t, "pvq-hessian", 2.0)) {
        fmt::print("2 bpw: pvq-hessian ({:.4f} bpw) KL {:.5f}\n", h->bpw, h->sampled.mean_kl);
        for (const me::table_row& r : t.rows) {
            if (!rtn_like(r) || r.target_bpw != 2.5) continue;
            fmt::print("  vs {} at 2.5 ({:.4f} bpw): KL {:.5f} ({:.2f}x): {}\n", r.method, r.bpw, r.sampled.mean_kl,
                       r.sampled.mean_kl / h->sampled.mean_kl, h->sampled.mean_kl < r.sampled.mean_kl ? "PASS" : "FAIL");
        }
    }
}

void write_json(const std::string& path, const me::run_options& o, const me::table& t) {
    using svq::examples::json_escape;
    svq::examples::json_file f(path);
    f.print("{{\n  \"seed\": {}, \"sequences\": {}, \"length\": {}, \"calibration_sequences\": {}, \"calibration_temperature\": {},\n"
            "  \"damping\": {},\n",
            o.seed, o.sequences, o.length, o.calibration_sequences, o.calibration_temperature, o.damping);
    f.print("  \"real_documents\": {}, \"evaluation_positions\": {}, \"calibration_tokens\": {}, \"shared_sequences\": {},\n",
            t.real_documents, t.evaluation_positions, t.calibration_tokens, t.shared_sequences);
    f.print("  \"rows\": [\n");
    const auto metrics = [](const me::set_metrics& m) {
        return fmt::format(
            "{{\"positions\": {}, \"mean_nll\": {:.10f}, \"perplexity\": {:.10f}, \"mean_kl\": {:.10e}, \"max_kl\": {:.10e}, "
            "\"top1\": {:.10f}}}",
            m.positions, m.mean_nll, m.perplexity, m.mean_kl, m.max_kl, m.top1);
    };
    f.print_elements(t.rows, "    ", [&](const me::table_row& r) {
        std::string configs;
        for (std::size_t j = 0; j < r.layer_configs.size(); ++j)
            configs += fmt::format("{}\"{}\"", j == 0 ? "" : ", ", json_escape(r.layer_configs[j]));
        return fmt::format(
            "{{\"method\": \"{}\", \"target_bpw\": {}, \"embedding\": {}, \"bpw\": {:.6f}, \"stored_bits\": {}, "
            "\"weights\": {},\n     \"real\": {},\n     \"sampled\": {},\n     \"rel_ppl_real\": {:.10f}, "
            "\"rel_ppl_sampled\": {:.10f}, \"quantize_seconds\": {:.3f},\n     \"layers\": [{}]}}",
            json_escape(r.method), r.target_bpw, r.embedding ? "true" : "false", r.bpw, r.stored_bits, r.weights,
            metrics(r.real), metrics(r.sampled), r.rel_real, r.rel_sampled, r.quantize_seconds, configs);
    });
    f.print("  ]\n}}\n");
    f.close();
}

}  // namespace

int main(int argc, char** argv) try {
    const options o = parse(argc, argv);
    if (!me::data_present(o.run.data_dir)) {
        fmt::print("model_eval: data absent ({} needs stories260K.bin, tok512.bin, tinystories_valid_sample.txt): skipped\n",
                   o.run.data_dir.string());
        return 0;
    }
    const auto mix = std::make_shared<me::pvq_hessian_mix>();
    std::vector<me::method> methods = me::standard_methods(mix);
    methods.push_back(me::pvq_tuned_method(mix, o.tune));
    methods.push_back({"crvq-kmeans", nullptr, [](std::span<const me::layer_problem> ps, double target) {
                           return me::quantize_crvq<svq::kmeans_base>(ps, target);
                       }});
    methods.push_back({"crvq-pvq", nullptr, [](std::span<const me::layer_problem> ps, double target) {
                           return me::quantize_crvq<svq::pvq_base>(ps, target);
                       }});

    fmt::print("stories260K from {}; evaluation set {} x {} tokens (seed {}), calibration set {} x {} tokens (temperature {}), {} thread(s)\n",
               o.run.data_dir.string(), o.run.sequences, o.run.length, o.run.seed, o.run.calibration_sequences,
               o.run.length, o.run.calibration_temperature, o.run.threads);
    print_header();
    const me::table t = me::run(o.run, methods, [&](const me::table_row& r) {
        print_row(r);
        if (o.print_layers)
            for (const std::string& c : r.layer_configs) fmt::print("    {}\n", c);
    });
    fmt::print("real text: {} documents, {} scored tokens; sampled set: {} scored positions; calibration: {} tokens; "
               "sequences in both sets: {}\n",
               t.real_documents, t.rows.front().real.positions, t.evaluation_positions, t.calibration_tokens,
               t.shared_sequences);
    print_summary(t);
    if (o.json) {
        write_json(*o.json, o.run, t);
        fmt::print("wrote {}\n", *o.json);
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "model_eval: %s\n", e.what());
    return 1;
}
