// Hessian-weighted PVQ against calibration activations: for each layer, plain
// PVQ, Hessian PVQ (GPTQ-style), RTN and GPTQ-RTN at target bpw 2, 3, 3.25, 4,
// with MSE, proxy loss tr(dW H dW^T) (H = X^T X / n, undamped) and the
// relative output error ||X W^T - X Wq^T|| / ||X W^T|| over the calibration tokens.
//
//   hessian_quantize [--json FILE] [--data DIR] [--synthetic] [--threads T]
//
// Real data (stories260K in DIR, default SVQ_DATA_DIR): layer inputs collected
// with the activation hook while the float model runs over sampled sequences;
// layers 0 and 4, wq / w1 / w2. Synthetic (no data, or --synthetic): a
// 512 x 1024 Student-t(4) matrix and 4096 correlated activations (decaying
// spectrum, four outlier channels). Quantizers get H damped by 0.01 mean(diag H).
// RTN rows use the int-b / group-G configuration (b + 16 / G bpw, G in 16..128)
// with the most bits at <= the target.
#include <common/activations.hpp>
#include <common/calibration_options.hpp>
#include <common/json.hpp>
#include <common/llama2.hpp>
#include <common/synthetic.hpp>

#include <svq/hessian/calibration.hpp>
#include <svq/hessian/gptq.hpp>
#include <svq/matrix/auto_config.hpp>
#include <svq/matrix/metrics.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/matrix/rtn.hpp>
#include <svq/quantize.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace {

// The paragraph under the usage line of --help.
constexpr const char* about =
    "Plain and Hessian PVQ, RTN and GPTQ-RTN of layers against their calibration activations.";

namespace llama2 = svq::llama2;

using clock_type = std::chrono::steady_clock;

struct layer_data {
    std::string name;
    std::size_t rows = 0, cols = 0, tokens = 0;
    std::vector<float> w, x;  // rows x cols; tokens x cols
};

struct result_row {
    std::string layer, method, config;
    double target = 0, bpw = 0, mse = 0, proxy = 0, rel_output = 0, seconds = 0;
};

std::vector<layer_data> real_layers(const std::filesystem::path& dir) {
    const llama2::model m = llama2::model::load(dir / "stories260K.bin");
    const std::vector<std::vector<int>> sequences = llama2::sample_sequences(m, 16, 256, 20240501, 1.0f);
    const llama2::linear_kind kinds[] = {llama2::linear_kind::wq, llama2::linear_kind::w1, llama2::linear_kind::w2};
    const int layers[] = {0, 4};
    std::vector<layer_data> out;
    std::vector<std::size_t> slot(m.linear_count(), std::numeric_limits<std::size_t>::max());
    for (const int layer : layers)
        for (const llama2::linear_kind kind : kinds) {
            const llama2::linear_view v = m.linear(layer, kind);
            layer_data d;
            d.name = v.name;
            d.rows = static_cast<std::size_t>(v.rows);
            d.cols = static_cast<std::size_t>(v.cols);
            d.w.assign(v.weights.begin(), v.weights.end());
            slot[v.index] = out.size();
            out.push_back(std::move(d));
        }
    llama2::collect_activations(m, sequences, [&](const llama2::linear_info& info, std::span<const float> input) {
        if (slot[info.index] == std::numeric_limits<std::size_t>::max()) return;
        layer_data& d = out[slot[info.index]];
        d.x.insert(d.x.end(), input.begin(), input.end());
        ++d.tokens;
    });
    return out;
}

std::vector<layer_data> synthetic_layers() {
    layer_data d;
    d.name = "synthetic t4 512x1024";
    d.rows = 512;
    d.cols = 1024;
    d.tokens = 4096;
    d.w = svq::examples::student_t_matrix(d.rows, d.cols, 4, 404);
    d.x = svq::examples::correlated_activations(d.tokens, d.cols, 405);
    return {std::move(d)};
}

// ||X (W - Wq)^T||_F / ||X W^T||_F.
double relative_output_error(const layer_data& d, const std::vector<float>& wq) {
    using fmat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const auto r = static_cast<Eigen::Index>(d.rows), c = static_cast<Eigen::Index>(d.cols),
               t = static_cast<Eigen::Index>(d.tokens);
    const Eigen::MatrixXd x = Eigen::Map<const fmat>(d.x.data(), t, c).cast<double>();
    const Eigen::MatrixXd w = Eigen::Map<const fmat>(d.w.data(), r, c).cast<double>();
    const Eigen::MatrixXd q = Eigen::Map<const fmat>(wq.data(), r, c).cast<double>();
    const double reference = (x * w.transpose()).norm();
    return reference > 0 ? (x * (w - q).transpose()).norm() / reference : 0.0;
}

// int-b, group G with the most bits (then the smallest G) at <= target bpw, as rtn_matrix counts them.
std::optional<svq::rtn_config> rtn_for(double target, std::size_t cols) {
    for (unsigned b = 8; b >= 1; --b)
        for (const std::size_t g : {16u, 32u, 64u, 128u}) {
            const std::size_t groups = (cols + g - 1) / g;
            if (b + 16.0 * groups / cols <= target + 1e-12) return svq::rtn_config{b, g};
        }
    return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) try {
    const auto o = svq::examples::calibration_options::parse(argc, argv, "hessian_quantize", "--synthetic", about);
    std::vector<layer_data> layers;
    const bool have_data = std::filesystem::exists(o.data / "stories260K.bin");
    if (!o.synthetic && have_data) {
        fmt::print("real data: stories260K in {}; activations of 16 sampled sequences x 256 tokens\n", o.data.string());
        layers = real_layers(o.data);
    } else {
        if (!o.synthetic) fmt::print("real data absent ({}): synthetic set only\n", o.data.string());
        layers = synthetic_layers();
    }
    const double targets[] = {2.0, 3.0, 3.25, 4.0};
    svq::gptq_options gopt;
    gopt.threads = o.threads;
    std::vector<result_row> rows;
    fmt::print("{:<24} {:<12} {:>6} {:>6} {:>11} {:>11} {:>8} {:>7}  {}\n", "layer", "method", "target", "bpw", "MSE",
               "proxy", "rel.out", "sec", "config");
    for (const layer_data& d : layers) {
        svq::hessian_accumulator acc(d.cols);
        acc.add(d.x, d.tokens);
        const std::vector<double> h = acc.hessian();
        const std::vector<double> hq = acc.damped_hessian(0.01);
        for (const double target : targets) {
            const auto add = [&](const std::string& method, const std::string& config, double bpw,
                                 const std::vector<float>& wq, double seconds) {
                result_row r{d.name, method, config, target, bpw, svq::mean_squared_error(d.w, wq),
                             svq::proxy_loss(d.w, wq, d.rows, d.cols, h), relative_output_error(d, wq), seconds};
                fmt::print("{:<24} {:<12} {:>6.2f} {:>6.3f} {:>11.4e} {:>11.4e} {:>8.4f} {:>7.2f}  {}\n", r.layer,
                           r.method, r.target, r.bpw, r.mse, r.proxy, r.rel_output, r.seconds, r.config);
                rows.push_back(std::move(r));
            };
            auto t0 = clock_type::now();
            const auto seconds = [&] { return std::chrono::duration<double>(clock_type::now() - t0).count(); };
            try {
                const svq::quantized_matrix plain = svq::quantize(d.w, d.rows, d.cols, {.target_bpw = target});
                add("pvq", svq::to_string(plain.config()), plain.bits_per_weight(), plain.dequantize(), seconds());
                t0 = clock_type::now();
                const svq::quantized_matrix hess = svq::quantize(d.w, d.rows, d.cols, {.target_bpw = target, .hessian = hq, .gptq = gopt});
                add("pvq-hessian", svq::to_string(hess.config()), hess.bits_per_weight(), hess.dequantize(), seconds());
            } catch (const svq::invalid_argument& e) {
                fmt::print("{:<24} pvq: {}\n", d.name, e.what());
            }
            if (const auto rc = rtn_for(target, d.cols)) {
                const std::string config = fmt::format("int{} g{}", rc->bits, rc->group);
                t0 = clock_type::now();
                const svq::rtn_matrix rtn = svq::rtn_quantize(d.w, d.rows, d.cols, *rc);
                add("rtn", config, rtn.bits_per_weight(), rtn.dequantize(), seconds());
                t0 = clock_type::now();
                const svq::rtn_matrix g = svq::gptq_rtn_quantize(d.w, d.rows, d.cols, hq, *rc, gopt);
                add("gptq-rtn", config, g.bits_per_weight(), g.dequantize(), seconds());
            }
        }
    }
    // Summary at 3 bpw: Hessian PVQ's proxy loss relative to plain PVQ and to GPTQ-RTN.
    fmt::print("\nproxy loss at target 3.0 bpw: pvq-hessian / pvq, pvq-hessian / gptq-rtn (same or lower bpw)\n");
    for (const layer_data& d : layers) {
        double plain = 0, hess = 0, grtn = 0;
        for (const result_row& r : rows) {
            if (r.layer != d.name || r.target != 3.0) continue;
            if (r.method == "pvq") plain = r.proxy;
            if (r.method == "pvq-hessian") hess = r.proxy;
            if (r.method == "gptq-rtn") grtn = r.proxy;
        }
        fmt::print("{:<24} {:>7.3f} ({:+.1f}%)  {:>7.3f}\n", d.name, hess / plain, 100.0 * (hess / plain - 1.0),
                   grtn > 0 ? hess / grtn : 0.0);
    }
    if (o.json) {
        svq::examples::write_json_array(*o.json, rows, [](const result_row& r) {
            using svq::examples::json_escape;
            return fmt::format(
                "{{\"layer\": \"{}\", \"method\": \"{}\", \"config\": \"{}\", \"target_bpw\": {}, "
                "\"bpw\": {:.6f}, \"mse\": {:.8e}, \"proxy_loss\": {:.8e}, "
                "\"relative_output_error\": {:.8e}, \"seconds\": {:.4f}}}",
                json_escape(r.layer), r.method, json_escape(r.config), r.target, r.bpw, r.mse, r.proxy, r.rel_output,
                r.seconds);
        });
        fmt::print("\nwrote {}\n", *o.json);
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "hessian_quantize: %s\n", e.what());
    return 1;
}
