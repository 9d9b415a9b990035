// Rate-distortion demo: svq's PVQ matrix codec and its trellis codec at
// target bits per weight on the synthetic sets of docs/design.md, "Synthetic
// sets" (4096 x 4096 iid Gaussian and Student-t(4)) and on the trained weights
// of stories260K (when SVQ_DATA_DIR has them), next to a round-to-nearest
// baseline (groups of 32, absmax int-b, fp16 scale) measured in the same run.
//
//   rate_distortion [--json FILE] [--size N] [--targets 2,3.25,...]
//                   [--trellis-targets 2,3,...] [--data DIR] [--no-real] [--no-progress]
//
// One thread. Every bpw is every stored bit / weights (docs/design.md, "Bits per weight").
#include <common/args.hpp>
#include <common/json.hpp>
#include <common/llama2.hpp>
#include <common/synthetic.hpp>

#include <svq/matrix/auto_config.hpp>
#include <svq/matrix/metrics.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/matrix/rtn.hpp>
#include <svq/simd/compat.hpp>
#include <svq/trellis/trellis.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#if __has_include(<unistd.h>)
#include <unistd.h>
#define SVQ_HAVE_ISATTY 1
#endif

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

struct matrix_part {
    std::string name;
    std::size_t rows = 0, cols = 0;
    std::vector<float> weights;
};

struct dataset {
    std::string name;
    std::vector<matrix_part> parts;
    std::size_t weights() const {
        std::size_t n = 0;
        for (const matrix_part& p : parts) n += p.rows * p.cols;
        return n;
    }
};

// Sums over the parts of a dataset, so a row of the table covers all of them.
struct tally {
    double signal = 0.0, noise = 0.0, bits = 0.0, weights = 0.0, encode_s = 0.0, decode_s = 0.0;
    void add(std::span<const float> x, std::span<const float> y, double stored_bits) {
        for (std::size_t i = 0; i < x.size(); ++i) {
            const double d = static_cast<double>(x[i]) - static_cast<double>(y[i]);
            signal += static_cast<double>(x[i]) * x[i];
            noise += d * d;
        }
        bits += stored_bits;
        weights += static_cast<double>(x.size());
    }
    double bpw() const { return bits / weights; }
    double sqnr_db() const { return 10.0 * std::log10(signal / noise); }
    double mse() const { return noise / weights; }
};

struct result_row {
    std::string dataset, method, config;
    double target = 0.0;  // 0 for baseline rows
    double bpw = 0.0, sqnr_db = 0.0, gap_db = 0.0, encode_mws = 0.0, decode_mws = 0.0;
    // The RTN baseline with the fewest bits at or above this row's bpw (RTN rows: themselves).
    std::string baseline;
    double baseline_bpw = 0.0, baseline_sqnr_db = 0.0, mse_ratio = 0.0;  // MSE(baseline) / MSE(this)
};

class progress_bar {
public:
    progress_bar(std::size_t total, bool enabled) : total_(total), enabled_(enabled) {
#ifdef SVQ_HAVE_ISATTY
        tty_ = isatty(fileno(stderr)) != 0;
#endif
    }
    void step(std::string_view what) {
        ++done_;
        if (!enabled_) return;
        constexpr std::size_t width = 30;
        const std::size_t filled = width * done_ / total_;
        const std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
        fmt::print(stderr, "{}[{}] {:>3}/{} {:<48}{}", tty_ ? "\r" : "", bar, done_, total_, what,
                   tty_ && done_ < total_ ? "" : "\n");
        std::fflush(stderr);
    }

private:
    std::size_t total_, done_ = 0;
    bool enabled_, tty_ = false;
};

std::optional<dataset> load_stories(const std::filesystem::path& dir) {
    const std::filesystem::path path = dir / "stories260K.bin";
    if (!std::filesystem::exists(path)) return std::nullopt;
    const svq::llama2::model model = svq::llama2::model::load(path);
    dataset d{"stories260K", {}};
    // One matrix per kind of linear layer, the layers' matrices stacked by rows (same input dim).
    for (const svq::llama2::linear_kind kind : svq::llama2::all_linear_kinds) {
        matrix_part part;
        part.name = std::string(svq::llama2::to_string(kind));
        for (int l = 0; l < model.config().n_layers; ++l) {
            const svq::llama2::linear_view v = model.linear(l, kind);
            part.cols = static_cast<std::size_t>(v.cols);
            part.rows += static_cast<std::size_t>(v.rows);
            part.weights.insert(part.weights.end(), v.weights.begin(), v.weights.end());
        }
        d.parts.push_back(std::move(part));
    }
    return d;
}

struct options {
    std::optional<std::string> json;
    std::size_t size = 4096;
    std::vector<double> targets = {2.0, 2.0625, 2.5, 2.5625, 3.0, 3.0625, 3.25, 3.4375, 3.5, 4.0, 4.25};
    std::vector<double> trellis_targets = {2.0, 2.5, 3.0, 3.25, 3.5, 4.0};
    std::filesystem::path data = SVQ_DATA_DIR;
    bool real = true, progress = true;
};

options parse(int argc, char** argv) {
    options o;
    svq::examples::arg_parser p("rate_distortion",
                                "svq's PVQ and trellis codecs at target bits per weight next to round-to-nearest, on\n"
                                "synthetic Gaussian and Student-t(4) matrices and stories260K's weights; one thread.");
    p.json_option(o.json, "the table")
        .option("--size", "N", o.size, "rows and columns of the synthetic matrices",
                svq::examples::bounds::at_least(64))
        .option("--targets", "2,3.25,...", o.targets, "target bits per weight of the svq PVQ rows")
        .option("--trellis-targets", "2,3,...", o.trellis_targets,
                "target bits per weight of the svq trellis rows (L = 12); empty: none")
        .data_option(o.data, "stories260K.bin")
        .flag("--no-real", o.real, "synthetic sets only (skip stories260K)", false)
        .flag("--no-progress", o.progress, "no progress bar on stderr", false);
    p.parse(argc, argv);
    return o;
}

void write_json(const std::string& path, const std::vector<result_row>& rows, const options& o) {
    using svq::examples::json_escape;
    svq::examples::json_file f(path);
    f.print("{{\n  \"arch\": \"{}\",\n  \"size\": {},\n  \"threads\": 1,\n  \"rows\": [\n", svq::simd::arch_name(),
            o.size);
    f.print_elements(rows, "    ", [](const result_row& r) {
        return fmt::format(
            "{{\"dataset\": \"{}\", \"method\": \"{}\", \"config\": \"{}\", \"target_bpw\": {}, "
            "\"bpw\": {:.6f}, \"sqnr_db\": {:.4f}, \"gap_db\": {:.4f}, \"encode_mws\": {:.3f}, "
            "\"decode_mws\": {:.3f}, \"baseline\": \"{}\", \"baseline_bpw\": {:.6f}, "
            "\"baseline_sqnr_db\": {:.4f}, \"baseline_mse_ratio\": {:.4f}}}",
            json_escape(r.dataset), json_escape(r.method), json_escape(r.config), r.target, r.bpw, r.sqnr_db, r.gap_db,
            r.encode_mws, r.decode_mws, json_escape(r.baseline), r.baseline_bpw, r.baseline_sqnr_db, r.mse_ratio);
    });
    f.print("  ]\n}}\n");
    f.close();
}

result_row run_rtn(const dataset& d, unsigned bits) {
    tally t;
    for (const matrix_part& p : d.parts) {
        const auto t0 = clock_type::now();
        const svq::rtn_matrix q = svq::rtn_quantize(p.weights, p.rows, p.cols, {bits, 32});
        t.encode_s += seconds_since(t0);
        const auto t1 = clock_type::now();
        const std::vector<float> y = q.dequantize();
        t.decode_s += seconds_since(t1);
        t.add(p.weights, y, static_cast<double>(q.stored_bits()));
    }
    result_row r;
    r.dataset = d.name;
    r.method = fmt::format("RTN int{} g32", bits);
    r.config = "absmax, fp16 scale per 32";
    r.bpw = t.bpw();
    r.sqnr_db = t.sqnr_db();
    r.gap_db = svq::gaussian_sqnr_bound_db(r.bpw) - r.sqnr_db;
    r.encode_mws = t.weights / t.encode_s / 1e6;
    r.decode_mws = t.weights / t.decode_s / 1e6;
    r.mse_ratio = t.mse();  // temporarily the MSE; the caller turns it into ratios
    return r;
}

// One svq row of the table: encode(part) returns the quantized matrix of a
// part (any QuantizedMatrix) and its configuration in a few words.
template <class Encode>
result_row run_svq(const dataset& d, double target, const char* method, Encode&& encode) {
    tally t;
    std::string config;
    for (const matrix_part& p : d.parts) {
        const auto t0 = clock_type::now();
        const auto [q, summary] = encode(p);
        t.encode_s += seconds_since(t0);
        const auto t1 = clock_type::now();
        const std::vector<float> y = q.dequantize();
        t.decode_s += seconds_since(t1);
        t.add(p.weights, y, static_cast<double>(q.stored_bits()));
        config += (config.empty() ? "" : "; ") + (d.parts.size() > 1 ? p.name + " " : std::string()) + summary;
    }
    result_row r;
    r.dataset = d.name;
    r.method = method;
    r.config = config;
    r.target = target;
    r.bpw = t.bpw();
    r.sqnr_db = t.sqnr_db();
    r.gap_db = svq::gaussian_sqnr_bound_db(r.bpw) - r.sqnr_db;
    r.encode_mws = t.weights / t.encode_s / 1e6;
    r.decode_mws = t.weights / t.decode_s / 1e6;
    r.mse_ratio = t.mse();
    return r;
}

void print_table(const std::vector<result_row>& rows) {
    fmt::print("\n| dataset | method | target | bpw | SQNR dB | gap to 6.02*bpw | baseline (bpw, dB) | "
               "baseline MSE / MSE | encode Mw/s | decode Mw/s | configuration |\n");
    fmt::print("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const result_row& r : rows) {
        const std::string target = r.target > 0 ? fmt::format("{:.4g}", r.target) : "-";
        const std::string base = fmt::format("{} ({:.3f}, {:.2f})", r.baseline, r.baseline_bpw, r.baseline_sqnr_db);
        fmt::print("| {} | {} | {} | {:.4f} | {:.2f} | {:.2f} | {} | {:.2f} | {:.2f} | {:.1f} | {} |\n", r.dataset,
                   r.method, target, r.bpw, r.sqnr_db, r.gap_db, base, r.mse_ratio, r.encode_mws, r.decode_mws,
                   r.config);
    }
}

}  // namespace

int main(int argc, char** argv) try {
    const options o = parse(argc, argv);
    fmt::print("svq rate-distortion: one thread, xsimd arch {}, synthetic sets {} x {}\n", svq::simd::arch_name(),
               o.size, o.size);

    std::vector<dataset> sets;
    sets.push_back({"gaussian", {{"gaussian", o.size, o.size, svq::examples::gaussian_matrix(o.size, o.size, 1)}}});
    sets.push_back(
        {"student-t4", {{"student-t4", o.size, o.size, svq::examples::student_t_matrix(o.size, o.size, 4, 2)}}});
    if (o.real) {
        if (std::optional<dataset> real = load_stories(o.data)) {
            fmt::print("real weights: {}/stories260K.bin, {} linear weights (wq wk wv wo w1 w2 w3 of all layers)\n",
                       o.data.string(), real->weights());
            sets.push_back(std::move(*real));
        } else {
            fmt::print("real weights: skipped, {}/stories260K.bin not found (synthetic sets only)\n",
                       o.data.string());
        }
    }

    constexpr unsigned rtn_bits[] = {2, 3, 4};
    progress_bar bar(sets.size() * (std::size(rtn_bits) + o.targets.size() + o.trellis_targets.size()), o.progress);
    const auto pvq = [](double target) {
        return [target](const matrix_part& p) {
            const svq::matrix_config c = svq::choose_config(p.weights, p.rows, p.cols, target).config;
            return std::pair{svq::quantize(p.weights, p.rows, p.cols, c),
                             fmt::format("N={} K={} gb={} sb={}", c.group_dim, c.pulses, c.gain_bits, c.row_scale_bits)};
        };
    };
    const auto trellis = [](double target) {
        return [target](const matrix_part& p) {
            const svq::trellis_config c = svq::trellis_config_for(p.rows, p.cols, target);
            return std::pair{svq::quantize_trellis(p.weights, p.rows, p.cols, c),
                             fmt::format("b={}/64 L={}", c.bits_per_64, c.state_bits)};
        };
    };
    std::vector<result_row> rows;
    for (const dataset& d : sets) {
        std::vector<result_row> baselines;
        for (const unsigned b : rtn_bits) {
            baselines.push_back(run_rtn(d, b));
            bar.step(fmt::format("{} RTN int{}", d.name, b));
        }
        std::vector<std::pair<double, bool>> runs;  // (target, trellis)
        for (const double target : o.targets) runs.emplace_back(target, false);
        for (const double target : o.trellis_targets) runs.emplace_back(target, true);
        for (const auto& [target, is_trellis] : runs) {
            result_row r = is_trellis ? run_svq(d, target, "svq trellis", trellis(target))
                                      : run_svq(d, target, "svq PVQ", pvq(target));
            // The cheapest baseline with at least this row's bits.
            const result_row* base = nullptr;
            for (const result_row& b : baselines)
                if (b.bpw >= r.bpw && (base == nullptr || b.bpw < base->bpw)) base = &b;
            if (base == nullptr) base = &baselines.back();
            r.baseline = base->method;
            r.baseline_bpw = base->bpw;
            r.baseline_sqnr_db = base->sqnr_db;
            r.mse_ratio = base->mse_ratio / r.mse_ratio;
            rows.push_back(std::move(r));
            bar.step(fmt::format("{} svq {} {} bpw", d.name, is_trellis ? "trellis" : "PVQ", target));
        }
        for (result_row& b : baselines) {
            b.mse_ratio = 1.0;
            b.baseline = b.method;
            b.baseline_bpw = b.bpw;
            b.baseline_sqnr_db = b.sqnr_db;
            rows.push_back(std::move(b));
        }
    }
    print_table(rows);
    if (o.json) {
        write_json(*o.json, rows, o);
        fmt::print("\nwrote {}\n", *o.json);
    }
    return 0;
} catch (const std::exception& e) {
    fmt::print(stderr, "rate_distortion: {}\n", e.what());
    return 1;
}
