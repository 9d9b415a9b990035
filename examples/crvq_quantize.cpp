// CRVQ against its base and against PVQ at about 1.07, 2.1 and 3.1 bpw, with
// MSE and proxy loss tr(dW H dW^T) (H = X^T X / n, undamped; the quantizers
// get H damped by 0.01 mean(diag H)).
//
//   crvq_quantize [--json FILE] [--data DIR] [--synthetic-only] [--threads T]
//
// Methods at each target (bpw = every stored bit: codes, fp16 codebooks,
// row scales, stored permutation / critical indices, fp32 scales):
//   vq-base           k-means base codebook alone (d, b): b / d bpw of codes
//   vq-base+1bit      the same codebook with one more bit (2^(b+1) entries)
//   crvq-kmeans       base + 3 extended codebooks on the 2% most important
//                     input channels, only the critical indices stored
//   crvq-kmeans-perm  the same with the base in importance order (whole
//                     permutation stored, cols * ceil(log2 cols) bits)
//   pvq               Hessian PVQ (hessian/gptq.hpp) at the target (its
//                     configuration search limited to N in {8, 16, 32}, rotated)
//   crvq-pvq          Hessian PVQ at the target minus the extension's bits,
//                     + 3 extended codebooks
// Synthetic set: a 512 x 1024 Student-t(4) matrix with 4096 correlated
// activations (examples/common/activations.hpp), one set of codebooks.
// Real set (stories260K in DIR, default SVQ_DATA_DIR): all 35 linear layers
// with their inputs over 16 sampled sequences x 256 tokens; the codebooks are
// shared by the 35 layers and counted once (docs/crvq.md).
#include <common/activations.hpp>
#include <common/calibration_options.hpp>
#include <common/json.hpp>
#include <common/llama2.hpp>
#include <common/synthetic.hpp>

#include <svq/crvq/crvq.hpp>
#include <svq/hessian/calibration.hpp>
#include <svq/hessian/gptq.hpp>
#include <svq/matrix/auto_config.hpp>
#include <svq/matrix/metrics.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

// The paragraph under the usage line of --help.
constexpr const char* about = "CRVQ (k-means and PVQ bases) against its base and Hessian PVQ at 1.07, 2.1 and 3.1 bpw.";

namespace llama2 = svq::llama2;
using clock_type = std::chrono::steady_clock;

struct layer_data {
    std::string name;
    std::size_t rows = 0, cols = 0;
    std::vector<float> w;
    std::vector<double> h, hq;  // undamped (proxy loss), damped (quantizers)
};

struct dataset {
    std::string name;
    std::vector<layer_data> layers;
    // (d, b) of the base codebook for targets 1.07, 2.1, 3.1; extended (d, b).
    std::size_t base_dim[3];
    unsigned base_bits[3];
    std::size_t ext_dim;
    unsigned ext_bits;
};

struct result_row {
    std::string set, method, config;
    double target = 0, bpw = 0, mse = 0, proxy = 0, seconds = 0;
};

void add_hessian(layer_data& d, std::span<const float> x, std::size_t tokens) {
    svq::hessian_accumulator acc(d.cols);
    acc.add(x, tokens);
    d.h = acc.hessian();
    d.hq = acc.damped_hessian(0.01);
}

dataset synthetic_set() {
    layer_data d;
    d.name = "synthetic t4 512x1024";
    d.rows = 512;
    d.cols = 1024;
    d.w = svq::examples::student_t_matrix(d.rows, d.cols, 4, 404);
    add_hessian(d, svq::examples::correlated_activations(4096, d.cols, 405), 4096);
    dataset s{"synthetic", {}, {8, 4, 2}, {8, 8, 6}, 8, 4};
    s.layers.push_back(std::move(d));
    return s;
}

dataset real_set(const std::filesystem::path& dir) {
    const llama2::model m = llama2::model::load(dir / "stories260K.bin");
    const std::vector<std::vector<int>> sequences = llama2::sample_sequences(m, 16, 256, 20240501, 1.0f);
    dataset s{"stories260K", {}, {4, 3, 2}, {4, 6, 6}, 4, 4};
    std::vector<std::vector<float>> inputs(m.linear_count());
    for (const llama2::linear_info& info : m.linear_infos()) {
        const llama2::linear_view v = m.linear(info.layer, info.kind);
        layer_data d;
        d.name = v.name;
        d.rows = static_cast<std::size_t>(v.rows);
        d.cols = static_cast<std::size_t>(v.cols);
        d.w.assign(v.weights.begin(), v.weights.end());
        s.layers.push_back(std::move(d));
    }
    llama2::collect_activations(m, sequences, [&](const llama2::linear_info& info, std::span<const float> input) {
        inputs[info.index].insert(inputs[info.index].end(), input.begin(), input.end());
    });
    for (std::size_t i = 0; i < s.layers.size(); ++i)
        add_hessian(s.layers[i], inputs[i], inputs[i].size() / s.layers[i].cols);
    return s;
}

struct totals {
    double mse = 0, proxy = 0;
};

// MSE over all weights and the sum of the layers' proxy losses.
totals measure(const dataset& s, const std::vector<std::vector<float>>& wq) {
    totals t;
    std::size_t n = 0;
    for (std::size_t i = 0; i < s.layers.size(); ++i) {
        const layer_data& d = s.layers[i];
        t.mse += svq::mean_squared_error(d.w, wq[i]) * static_cast<double>(d.w.size());
        t.proxy += svq::proxy_loss(d.w, wq[i], d.rows, d.cols, d.h);
        n += d.w.size();
    }
    t.mse /= static_cast<double>(n);
    return t;
}

}  // namespace

int main(int argc, char** argv) try {
    const auto o = svq::examples::calibration_options::parse(argc, argv, "crvq_quantize", "--synthetic-only", about);
    std::vector<dataset> sets;
    sets.push_back(synthetic_set());
    if (o.synthetic) {
        fmt::print("real data: skipped (--synthetic-only)\n");
    } else if (std::filesystem::exists(o.data / "stories260K.bin")) {
        fmt::print("real data: stories260K in {}; all linear layers, activations of 16 sequences x 256 tokens\n",
                   o.data.string());
        sets.push_back(real_set(o.data));
    } else {
        fmt::print("real data: skipped, {} has no stories260K.bin\n", o.data.string());
    }
    const double targets[] = {1.07, 2.1, 3.1};
    std::vector<result_row> rows;
    fmt::print("{:<12} {:<17} {:>6} {:>7} {:>11} {:>11} {:>7}  {}\n", "set", "method", "target", "bpw", "MSE", "proxy",
               "sec", "config");
    for (const dataset& s : sets) {
        std::vector<svq::crvq_layer> layers;
        std::size_t weights = 0;
        for (const layer_data& d : s.layers) {
            layers.push_back({d.w, d.rows, d.cols, d.hq});
            weights += d.w.size();
        }
        for (std::size_t t = 0; t < 3; ++t) {
            const double target = targets[t];
            auto t0 = clock_type::now();
            const auto add = [&](const std::string& method, const std::string& config, double bpw,
                                 const std::vector<std::vector<float>>& wq) {
                const totals m = measure(s, wq);
                const double sec = std::chrono::duration<double>(clock_type::now() - t0).count();
                rows.push_back({s.name, method, config, target, bpw, m.mse, m.proxy, sec});
                fmt::print("{:<12} {:<17} {:>6.2f} {:>7.4f} {:>11.4e} {:>11.4e} {:>7.2f}  {}\n", s.name, method, target,
                           bpw, m.mse, m.proxy, sec, config);
                std::fflush(stdout);
                t0 = clock_type::now();
            };
            // Both bases go through one lambda (a template over the base type).
            const auto run_crvq = [&]<class B>(const std::string& method, const svq::crvq_config<B>& c,
                                               const std::string& base_config) {
                const svq::crvq_model<B> m = svq::crvq_quantize(layers, c);
                std::vector<std::vector<float>> wq;
                for (const svq::crvq_matrix<B>& q : m.matrices) wq.push_back(q.dequantize());
                std::string config = base_config;
                if (c.extended_codebooks > 0 && c.critical_fraction > 0)
                    config += fmt::format(" + {} x (d{} b{}) on {:.0f}%{}", c.extended_codebooks, c.extended_dim,
                                          c.extended_bits, 100 * c.critical_fraction,
                                          m.matrices.front().base_permuted() ? " perm" : "");
                add(method, config, m.bits_per_weight(), wq);
                return m.bits_per_weight();
            };
            const auto kmeans_config = [](const svq::crvq_config<svq::kmeans_base>& c) {
                return fmt::format("base d{} b{}", c.base.dim, c.base.bits);
            };
            svq::crvq_config<svq::kmeans_base> base;
            base.base.dim = s.base_dim[t];
            base.base.bits = s.base_bits[t];
            base.extended_dim = s.ext_dim;
            base.extended_bits = s.ext_bits;
            base.critical_fraction = 0.0;
            const double base_bpw = run_crvq("vq-base", base, kmeans_config(base));
            svq::crvq_config<svq::kmeans_base> larger = base;
            ++larger.base.bits;
            run_crvq("vq-base+1bit", larger, kmeans_config(larger));
            svq::crvq_config<svq::kmeans_base> crvq = base;
            crvq.critical_fraction = 0.02;
            crvq.base.permute = false;
            const double crvq_bpw = run_crvq("crvq-kmeans", crvq, kmeans_config(crvq));
            crvq.base.permute = true;
            run_crvq("crvq-kmeans-perm", crvq, kmeans_config(crvq));
            // Hessian PVQ's configuration search: N in {8, 16, 32} (what it picks on these
            // activations) with the rotation on only, which keeps the example to minutes.
            svq::pvq_base pvq_options;
            pvq_options.search.group_dims = {8, 16, 32};
            pvq_options.gptq.threads = o.threads;
            pvq_options.gptq.try_both_rotations = false;
            // PVQ alone at the target, then PVQ at the target less what the extension costs.
            std::vector<std::vector<float>> wq;
            std::size_t bits = 0;
            for (const layer_data& d : s.layers) {
                const svq::quantized_matrix q =
                    svq::quantize(d.w, d.rows, d.cols, {.target_bpw = target, .hessian = d.hq, .choice = pvq_options.search, .gptq = pvq_options.gptq});
                bits += q.stored_bits();
                wq.push_back(q.dequantize());
            }
            add("pvq", "hessian pvq", static_cast<double>(bits) / static_cast<double>(weights), wq);
            svq::crvq_config<svq::pvq_base> pvq;
            pvq.base = pvq_options;
            pvq.base.target_bpw = target - (crvq_bpw - base_bpw);
            pvq.extended_dim = crvq.extended_dim;
            pvq.extended_bits = crvq.extended_bits;
            pvq.critical_fraction = crvq.critical_fraction;
            run_crvq("crvq-pvq", pvq, fmt::format("pvq@{:.3f}", pvq.base.target_bpw));
        }
    }
    fmt::print("\nproxy loss relative to vq-base at the same target (sum over the set's layers)\n");
    for (const dataset& s : sets)
        for (const double target : targets) {
            double ref = 0;
            for (const result_row& r : rows)
                if (r.set == s.name && r.target == target && r.method == "vq-base") ref = r.proxy;
            fmt::print("{:<12} {:>5.2f}:", s.name, target);
            for (const result_row& r : rows)
                if (r.set == s.name && r.target == target)
                    fmt::print("  {} {:.3f} ({:.3f} bpw)", r.method, r.proxy / ref, r.bpw);
            fmt::print("\n");
        }
    if (o.json) {
        svq::examples::write_json_array(*o.json, rows, [](const result_row& r) {
            using svq::examples::json_escape;
            return fmt::format(
                "{{\"set\": \"{}\", \"method\": \"{}\", \"config\": \"{}\", \"target_bpw\": {}, "
                "\"bpw\": {:.6f}, \"mse\": {:.8e}, \"proxy_loss\": {:.8e}, \"seconds\": {:.4f}}}",
                json_escape(r.set), r.method, json_escape(r.config), r.target, r.bpw, r.mse, r.proxy, r.seconds);
        });
        fmt::print("\nwrote {}\n", *o.json);
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "crvq_quantize: %s\n", e.what());
    return 1;
}
