// svq: the command-line tool (docs/cli.md).
//
//   svq quantize INPUT... -o OUT --bpw B [--method pvq|hessian|crvq|rtn|trellis] ...
//   svq info FILE [--json]
//   svq dequantize INPUT -o OUT [--dtype f32|f16|bf16]
//   svq compare REFERENCE QUANTIZED [--json]
//   svq bench FILE [--threads N]
//
// Every command reads checkpoints through svq::checkpoint (.safetensors, a
// sharded index.json, a directory, .npy) and quantized files through
// svq::load. A usage error (CLI11's ParseError) or an svq::error ends the
// program with one line on stderr, "svq: error: <message>", and exit code 2
// (usage) or 1 (anything else); --help prints the command's options with
// their defaults on stdout and exits 0.
#include <svq/io/checkpoint.hpp>
#include <svq/io/quantized_file.hpp>
#include <svq/svq.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <span>
#include <deque>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// "12.3 kB" style sizes (powers of 1000) for the human-readable tables.
std::string human_bytes(double b) {
    const char* units[] = {"B", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (b >= 1000.0 && u < 4) {
        b /= 1000.0;
        ++u;
    }
    return u == 0 ? fmt::format("{:.0f} {}", b, units[u]) : fmt::format("{:.2f} {}", b, units[u]);
}

std::string duration_string(double s) {
    if (!std::isfinite(s) || s < 0) return "?";
    if (s < 60) return fmt::format("{:.1f}s", s);
    return fmt::format("{}m{:02}s", static_cast<long>(s) / 60, static_cast<long>(s) % 60);
}

// A regular expression given on the command line, compiled once; a bad one is
// an svq::invalid_argument naming the option and the expression.
std::regex compile_regex(const std::string& option, const std::string& text) {
    try {
        return std::regex(text, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
        throw svq::invalid_argument(fmt::format("{} '{}': bad regular expression: {}", option, text, e.what()));
    }
}

// A path an output will be written to: its directory must exist and be
// writable, and it must not be a directory itself. Checked before any work.
void check_output_path(const fs::path& out) {
    if (out.empty()) throw svq::io_error("-o: empty output path");
    if (fs::is_directory(out)) throw svq::io_error(fmt::format("{}: output path is a directory", out.string()));
    const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
    if (!fs::is_directory(dir))
        throw svq::io_error(fmt::format("{}: cannot write: directory {} does not exist", out.string(), dir.string()));
    if (::access(dir.c_str(), W_OK) != 0 || (fs::exists(out) && ::access(out.c_str(), W_OK) != 0))
        throw svq::io_error(fmt::format("{}: cannot write: permission denied", out.string()));
}

void check_input_path(const fs::path& in) {
    if (!fs::exists(in)) throw svq::io_error(fmt::format("{}: no such file or directory", in.string()));
}

bool is_float(svq::dtype t) {
    return t == svq::dtype::f32 || t == svq::dtype::f16 || t == svq::dtype::bf16 || t == svq::dtype::f64;
}

// Whether `path` is an svq file (has the svq.version metadata entry).
bool is_svq_file(const fs::path& path) {
    const std::string n = path.filename().string();
    if (fs::is_directory(path) || n.ends_with(".npy") || n.ends_with(".json")) return false;
    const svq::safetensors_file f = svq::safetensors_file::open(path);
    return f.metadata("svq.version") != nullptr;
}

// Signal and noise energies of a reconstruction, in double.
struct error_stats {
    double signal = 0.0, noise = 0.0, max_abs = 0.0;
    // 10 log10(signal / noise): +inf for an exact copy, NaN for a zero reference.
    double sqnr_db() const {
        if (!(signal > 0.0)) return std::numeric_limits<double>::quiet_NaN();
        if (noise == 0.0) return std::numeric_limits<double>::infinity();
        return 10.0 * std::log10(signal / noise);
    }
    double relative_error() const {
        return signal > 0.0 ? std::sqrt(noise / signal) : std::numeric_limits<double>::quiet_NaN();
    }
};

error_stats measure(std::span<const float> x, std::span<const float> xhat) {
    error_stats s;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double d = static_cast<double>(x[i]) - static_cast<double>(xhat[i]);
        s.signal += static_cast<double>(x[i]) * x[i];
        s.noise += d * d;
        s.max_abs = std::max(s.max_abs, std::fabs(d));
    }
    return s;
}

// The same for a PVQ matrix against its weights w without a decoded copy of
// it: the rows split over the threads, decoded 16 at a time into a small
// buffer, each row's sums in double, then the rows' sums added in row order
// (the same result whatever the thread count; it differs from measure() on
// the whole decode only in the last bits of the sums).
error_stats measure_decoded(const svq::quantized_matrix& q, std::span<const float> w, unsigned threads) {
    const std::size_t rows = q.rows(), cols = q.cols(), block = 16;
    std::vector<error_stats> per_row(rows);
    svq::detail::parallel_slices((rows + block - 1) / block, threads, [&](std::size_t first, std::size_t last) {
        std::vector<float> buffer(block * cols);
        for (std::size_t b = first; b < last; ++b) {
            const std::size_t r0 = b * block, n = std::min(block, rows - r0);
            const std::span<float> decoded(buffer.data(), n * cols);
            q.decode_rows(r0, n, decoded);
            for (std::size_t r = 0; r < n; ++r)
                per_row[r0 + r] = measure(w.subspan((r0 + r) * cols, cols), decoded.subspan(r * cols, cols));
        }
    });
    error_stats s;
    for (const error_stats& r : per_row) {
        s.signal += r.signal;
        s.noise += r.noise;
        s.max_abs = std::max(s.max_abs, r.max_abs);
    }
    return s;
}

// JSON has no infinities: +inf SQNR (an exact copy) is written as the string "inf", NaN as null.
nlohmann::ordered_json json_number(double v) {
    if (std::isnan(v)) return nullptr;
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    return v;
}

std::string shape_text(const std::vector<std::size_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

// The floats of one whole tensor, in memory aligned to 2 MB and advised to
// the kernel as huge-page memory (MADV_HUGEPAGE; ignored where unsupported):
// filling 64 MB then takes 32 page faults instead of 16,384, which keeps the
// reading and the SQNR decode of a large matrix small next to its quantizing.
class float_buffer {
public:
    explicit float_buffer(std::size_t n) : n_(n) {
        constexpr std::size_t huge = std::size_t{2} << 20;
        const std::size_t bytes = std::max(huge, (n * sizeof(float) + huge - 1) / huge * huge);
        data_.reset(static_cast<float*>(std::aligned_alloc(huge, bytes)));
        if (!data_) throw std::bad_alloc();
        ::madvise(data_.get(), bytes, MADV_HUGEPAGE);
    }
    std::span<float> span() noexcept { return {data_.get(), n_}; }
    std::span<const float> span() const noexcept { return {data_.get(), n_}; }

private:
    struct free_deleter {
        void operator()(float* p) const noexcept { std::free(p); }
    };
    std::size_t n_;
    std::unique_ptr<float, free_deleter> data_;
};

// ---------------------------------------------------------------- quantize

struct quantize_args {
    std::vector<std::string> inputs;
    std::string output;
    double bpw = 0.0;
    std::string method = "pvq";
    std::string calibration;
    bool speed = false;
    unsigned state_bits = 12;
    bool state_bits_given = false;
    std::string include;
    std::string exclude;
    std::vector<std::string> tensor_bpw;
    unsigned threads = 1;
    double damping = 0.01;
};

// RTN's (bits, group) for a target: the most bits, then the smallest group
// (of 32, 64, 128), whose exact rate on this row length (bits + 16 bits of
// fp16 scale per group) is at or below the target.
svq::rtn_config rtn_for(double bpw, std::size_t cols, const std::string& name) {
    for (unsigned bits = 8; bits >= 1; --bits)
        for (const std::size_t group : {32, 64, 128}) {
            const double rate = bits + 16.0 * static_cast<double>((cols + group - 1) / group) / static_cast<double>(cols);
            if (rate <= bpw) return {bits, group};
        }
    throw svq::invalid_argument(
        fmt::format("tensor '{}': rtn reaches no configuration at {} bpw (the least is 1 bit + scales, > 1.125)", name, bpw));
}

std::string rtn_string(const svq::rtn_config& c) { return fmt::format("rtn bits={} group={}", c.bits, c.group); }

// The calibration file: for tensor T, the precomputed X^T X as "T.hessian"
// ([cols, cols]), else activations "T" ([n, cols]); a .npy file (one tensor)
// gives activations for every matrix whose column count matches.
class calibration_source {
public:
    explicit calibration_source(const std::string& path, double damping) : damping_(damping) {
        if (path.empty()) return;
        check_input_path(path);
        ckpt_ = svq::checkpoint::open(path);
        single_ = fs::path(path).extension() == ".npy";
    }
    bool empty() const { return !ckpt_.has_value(); }

    // The damped Hessian for tensor `name` (cols columns); empty when the file has nothing for it.
    std::vector<double> hessian(const std::string& name, std::size_t cols) const {
        if (!ckpt_) return {};
        if (ckpt_->contains(name + ".hessian")) {
            const svq::tensor_info& t = ckpt_->info(name + ".hessian");
            if (t.shape != std::vector<std::size_t>{cols, cols})
                throw svq::invalid_argument(fmt::format("calibration '{}.hessian' is {}, tensor '{}' needs [{}, {}]", name,
                                                        shape_text(t.shape), name, cols, cols));
            const std::vector<float> f = ckpt_->to_float(name + ".hessian");
            std::vector<double> h(f.begin(), f.end());
            svq::damp_hessian(h, cols, damping_);
            svq::check_positive_definite(h, cols, "calibration Hessian");
            return h;
        }
        const std::string key = single_ ? ckpt_->names().front() : name;
        if (!ckpt_->contains(key)) return {};
        const svq::tensor_info& t = ckpt_->info(key);
        if (t.shape.size() != 2 || t.shape[1] != cols) {
            if (single_) return {};
            throw svq::invalid_argument(fmt::format("calibration activations '{}' are {}, tensor '{}' needs [n, {}]", key,
                                                    shape_text(t.shape), name, cols));
        }
        svq::hessian_accumulator acc(cols);
        acc.add(ckpt_->to_float(key), t.shape[0]);
        return acc.damped_hessian(damping_);
    }

private:
    std::optional<svq::checkpoint> ckpt_;
    bool single_ = false;
    double damping_;
};

// One --tensor-bpw REGEX=B.
struct bpw_override {
    std::string text;
    std::regex re;
    double bpw;
};

std::vector<bpw_override> parse_overrides(const std::vector<std::string>& specs) {
    std::vector<bpw_override> out;
    for (const std::string& s : specs) {
        const std::size_t eq = s.rfind('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == s.size())
            throw svq::invalid_argument(fmt::format("--tensor-bpw '{}': expected REGEX=BPW", s));
        const std::string value = s.substr(eq + 1);
        double b = 0.0;
        try {
            std::size_t used = 0;
            b = std::stod(value, &used);
            if (used != value.size()) throw std::invalid_argument("trailing characters");
        } catch (const std::exception&) {
            throw svq::invalid_argument(fmt::format("--tensor-bpw '{}': '{}' is not a number", s, value));
        }
        if (!(b > 0.0 && b <= 32.0))
            throw svq::invalid_argument(fmt::format("--tensor-bpw '{}': bpw {} must be in (0, 32]", s, b));
        out.push_back({s, compile_regex("--tensor-bpw", s.substr(0, eq)), b});
    }
    return out;
}

// The progress line: tensor i of n, its name, weights per second so far and
// the time left at that rate. Redrawn in place on a terminal, one line per
// tensor otherwise (a log keeps every line).
class progress_line {
public:
    progress_line(std::size_t total_weights) : total_(total_weights), tty_(::isatty(STDERR_FILENO) != 0) {}
    void update(std::size_t index, std::size_t count, const std::string& name, std::size_t done_weights, bool finished) {
        const double t = seconds_since(start_);
        const double rate = t > 0 ? static_cast<double>(done_weights) / t : 0.0;
        const double eta = rate > 0 ? static_cast<double>(total_ - done_weights) / rate : std::nan("");
        const std::string line = fmt::format("[{}/{}] {}  {:.3g} weights/s  ETA {}", index + 1, count, name, rate,
                                             duration_string(eta));
        if (tty_) {
            std::fprintf(stderr, "\r\033[K%s", line.c_str());
            std::fflush(stderr);
        } else if (finished) {
            std::fprintf(stderr, "%s\n", line.c_str());
        }
    }
    void done() {
        if (tty_) std::fprintf(stderr, "\r\033[K");
    }

private:
    std::size_t total_;
    bool tty_;
    clock_type::time_point start_ = clock_type::now();
};

struct tensor_row {
    std::string name, shape, config;
    double bpw = 0.0, sqnr = 0.0;
    bool quantized = false;
};

int run_quantize(const quantize_args& a) {
    static const std::set<std::string> methods = {"pvq", "hessian", "crvq", "rtn", "trellis"};
    if (!methods.count(a.method))
        throw svq::invalid_argument(fmt::format("--method '{}': expected pvq, hessian, crvq, rtn or trellis", a.method));
    if (a.state_bits < 4 || a.state_bits > 16)
        throw svq::invalid_argument(fmt::format("--state-bits {}: must be in 4..16", a.state_bits));
    if (a.state_bits_given && a.method != "trellis")
        throw svq::invalid_argument(fmt::format("--state-bits applies to --method trellis, not '{}'", a.method));
    if (!(a.bpw > 0.0 && a.bpw <= 32.0)) throw svq::invalid_argument(fmt::format("--bpw {}: must be in (0, 32]", a.bpw));
    if (a.method == "hessian" && a.calibration.empty())
        throw svq::invalid_argument("--method hessian needs --calibration FILE (activations or per-tensor X^T X)");
    const std::optional<std::regex> include =
        a.include.empty() ? std::nullopt : std::optional<std::regex>(compile_regex("--include", a.include));
    const std::optional<std::regex> exclude =
        a.exclude.empty() ? std::nullopt : std::optional<std::regex>(compile_regex("--exclude", a.exclude));
    const std::vector<bpw_override> overrides = parse_overrides(a.tensor_bpw);
    for (const std::string& in : a.inputs) check_input_path(in);
    check_output_path(a.output);
    const calibration_source calibration(a.calibration, a.damping);

    // Every input's tensors, names unique across inputs.
    std::deque<svq::checkpoint> inputs;
    std::vector<std::pair<const svq::checkpoint*, std::string>> tensors;
    std::map<std::string, std::string> seen;  // name -> input
    std::set<std::string> input_files;
    for (const std::string& in : a.inputs) {
        inputs.push_back(svq::checkpoint::open(in));
        for (const std::string& n : inputs.back().names()) {
            if (!seen.emplace(n, in).second)
                throw svq::invalid_argument(fmt::format("tensor '{}' is in both {} and {}", n, seen[n], in));
            tensors.emplace_back(&inputs.back(), n);
            const svq::safetensors_file* f = inputs.back().file_of(n);
            input_files.insert(f ? f->path() : in);
        }
    }
    std::uintmax_t input_bytes = 0;
    for (const std::string& f : input_files) input_bytes += fs::file_size(f);

    // Which tensors are quantized: 2-D, floating point, matching --include and not --exclude.
    auto selected = [&](const svq::checkpoint& c, const std::string& n) {
        const svq::tensor_info& t = c.info(n);
        if (t.shape.size() != 2 || !is_float(t.type)) return false;
        if (include && !std::regex_search(n, *include)) return false;
        return !(exclude && std::regex_search(n, *exclude));
    };
    std::size_t total_weights = 0, matrices = 0;
    for (const auto& [c, n] : tensors)
        if (selected(*c, n)) {
            total_weights += c->info(n).elements();
            ++matrices;
        }

    svq::model_writer writer;
    // The inputs' own metadata (a model's configuration) is carried over; svq's keys are not.
    for (const auto& [c, n] : tensors)
        if (const svq::safetensors_file* f = c->file_of(n))
            for (const auto& [key, value] : f->metadata())
                if (!key.starts_with("svq.") && !key.ends_with(".svq")) writer.set_metadata(key, value);
    // Phase 1: the selected tensors quantized. With at least as many matrices
    // as threads, whole matrices go to the threads (each quantized on one
    // thread: choose_config's trial encodes are serial, so this is what
    // scales on a model of many small matrices); otherwise one matrix at a
    // time, its rows split over the threads. Either way the result is the
    // same bytes (svq::quantize does not depend on its thread count).
    struct job_result {
        tensor_row row;
        std::optional<svq::quantized_matrix> pvq;
        std::optional<svq::rtn_matrix> rtn;
        std::optional<svq::crvq_model<svq::pvq_base>> crvq;
        std::optional<svq::trellis_matrix> trellis;
        bool hessian = false;
    };
    std::vector<std::size_t> jobs;  // indices into tensors
    for (std::size_t i = 0; i < tensors.size(); ++i)
        if (selected(*tensors[i].first, tensors[i].second)) jobs.push_back(i);
    std::vector<job_result> results(jobs.size());
    const unsigned threads = svq::detail::thread_count(a.threads);
    const bool by_tensor = threads > 1 && jobs.size() >= threads;
    const unsigned inner_threads = by_tensor ? 1 : threads;
    progress_line progress(total_weights);
    std::mutex progress_mutex;
    std::size_t done_weights = 0, finished = 0;
    std::atomic<std::size_t> next{0};
    const auto t0 = clock_type::now();
    auto quantize_job = [&](std::size_t j) {
        const auto& [c, n] = tensors[jobs[j]];
        const svq::tensor_info& t = c->info(n);
        job_result& out = results[j];
        out.row = {n, shape_text(t.shape), "-", 0.0, 0.0, true};
        const std::size_t r = t.shape[0], k = t.shape[1];
        double bpw = a.bpw;
        for (const bpw_override& o : overrides)
            if (std::regex_search(n, o.re)) bpw = o.bpw;  // the last match wins
        float_buffer wbuf(t.elements());
        c->to_float(n, wbuf.span(), inner_threads);
        const std::span<const float> w = wbuf.span();
        const bool plain_mse = a.method == "rtn" || a.method == "pvq" || a.method == "trellis";
        const std::vector<double> h = plain_mse ? std::vector<double>{} : calibration.hessian(n, k);
        if (a.method == "hessian" && h.empty())
            throw svq::invalid_argument(fmt::format("{}: no calibration for tensor '{}' ('{}.hessian' [{}, {}] or '{}' [n, {}])",
                                                    a.calibration, n, n, k, k, n, k));
        // Rows done within this matrix (one matrix at a time only: the callback runs on this thread).
        auto report = [&, n = n, k = k](std::size_t rows_done, std::size_t) {
            const std::lock_guard<std::mutex> lock(progress_mutex);
            progress.update(finished, matrices, n, done_weights + rows_done * k, false);
        };
        std::vector<float> back;  // RTN and CRVQ decoded (PVQ is measured as it decodes)
        try {
            if (a.method == "rtn") {
                const svq::rtn_config rc = rtn_for(bpw, k, n);
                out.rtn.emplace(svq::rtn_quantize(w, r, k, rc));
                out.row.config = rtn_string(rc);
                out.row.bpw = out.rtn->bits_per_weight();
                back = out.rtn->dequantize();
            } else if (a.method == "trellis") {
                out.trellis.emplace(
                    svq::quantize_trellis(w, r, k, svq::trellis_config_for(r, k, bpw, a.state_bits), inner_threads));
                out.row.config = svq::to_string(out.trellis->config());
                out.row.bpw = out.trellis->bits_per_weight();
                back.resize(w.size());
                out.trellis->dequantize(back, inner_threads);
            } else if (a.method == "crvq") {
                svq::crvq_config<svq::pvq_base> cc;
                cc.base.target_bpw = bpw;
                if (a.speed) cc.base.search = svq::speed_config_options();
                cc.threads = inner_threads;
                out.crvq.emplace(svq::crvq_quantize(w, r, k, h, cc));
                const auto& m = out.crvq->matrices[0];
                out.row.config = fmt::format("crvq pvq base {} + {} critical", svq::to_string(m.base_part().config()),
                                             m.critical_channels());
                out.row.bpw = out.crvq->bits_per_weight();
                back = m.dequantize();
            } else {
                svq::quantize_options o{.target_bpw = bpw, .hessian = h, .threads = inner_threads};
                if (!by_tensor) o.progress = report;
                if (a.speed) o.choice = svq::speed_config_options();
                out.pvq.emplace(svq::quantize(w, r, k, o));
                out.hessian = !h.empty();
                out.row.config = svq::to_string(out.pvq->config());
                out.row.bpw = out.pvq->bits_per_weight();
            }
        } catch (const svq::error& e) {
            throw svq::invalid_argument(
                fmt::format("tensor '{}' {} at {} bpw ({}): {}", n, out.row.shape, bpw, a.method, e.what()));
        }
        out.row.sqnr = (out.pvq ? measure_decoded(*out.pvq, w, inner_threads) : measure(w, back)).sqnr_db();
        const std::lock_guard<std::mutex> lock(progress_mutex);
        done_weights += w.size();
        progress.update(finished++, matrices, n, done_weights, true);
    };
    try {
        if (by_tensor) {
            svq::detail::parallel_slices(threads, threads, [&](std::size_t, std::size_t) {
                for (std::size_t j = next++; j < jobs.size(); j = next++) quantize_job(j);
            });
        } else {
            for (std::size_t j = 0; j < jobs.size(); ++j) quantize_job(j);
        }
    } catch (...) {
        progress.done();
        throw;
    }

    // Phase 2: the file, tensors in input order.
    std::vector<tensor_row> rows;
    for (std::size_t i = 0, j = 0; i < tensors.size(); ++i) {
        const auto& [c, n] = tensors[i];
        if (j < jobs.size() && jobs[j] == i) {
            job_result& q = results[j++];
            if (q.pvq) writer.add(n, *q.pvq, q.hessian ? "hessian" : "mse");
            if (q.rtn) writer.add(n, *q.rtn);
            if (q.trellis) writer.add(n, *q.trellis);
            if (q.crvq) {
                const std::string names[] = {n};
                writer.add_crvq(n + ".crvq_codebooks", *q.crvq, names);
            }
            rows.push_back(q.row);
            continue;
        }
        const svq::tensor_info& t = c->info(n);
        const svq::safetensors_file* f = c->file_of(n);
        if (f) writer.add_tensor_bytes(n, t.type, t.shape, f->data(t));
        else writer.add_tensor(n, c->to_float(n), t.shape);
        rows.push_back({n, shape_text(t.shape), std::string(svq::dtype_name(t.type)),
                        8.0 * static_cast<double>(svq::dtype_size(t.type)), 0.0, false});
    }
    progress.done();
    const double elapsed = seconds_since(t0);
    writer.write(a.output);
    const std::uintmax_t output_bytes = fs::file_size(a.output);

    std::size_t wn = 24;
    for (const tensor_row& x : rows) wn = std::max(wn, x.name.size());
    std::printf("%-*s  %-11s  %-55s  %7s  %9s\n", static_cast<int>(wn), "tensor", "shape", "config", "bpw", "SQNR dB");
    for (const tensor_row& x : rows) {
        std::printf("%-*s  %-11s  %-55s  %7.4f  %9s\n", static_cast<int>(wn), x.name.c_str(), x.shape.c_str(),
                    x.config.c_str(), x.bpw, x.quantized ? fmt::format("{:.2f}", x.sqnr).c_str() : "-");
    }
    std::printf("%zu tensors (%zu quantized, %zu weights) in %.2f s (%.3g weights/s, %u thread%s)\n", rows.size(), matrices,
                total_weights, elapsed, elapsed > 0 ? static_cast<double>(total_weights) / elapsed : 0.0, a.threads,
                a.threads == 1 ? "" : "s");
    std::printf("%s: %s (%ju bytes), input %s (%ju bytes): %.2fx smaller\n", a.output.c_str(),
                human_bytes(static_cast<double>(output_bytes)).c_str(), output_bytes,
                human_bytes(static_cast<double>(input_bytes)).c_str(), input_bytes,
                output_bytes > 0 ? static_cast<double>(input_bytes) / static_cast<double>(output_bytes) : 0.0);
    return 0;
}


// ---------------------------------------------------------------- reading either kind of file

// The tensors of a file as floats, whatever it is: an svq file (quantized
// matrices decoded, plain tensors read, checksums verified) or a checkpoint.
class float_source {
public:
    explicit float_source(const std::string& path) {
        check_input_path(path);
        if (is_svq_file(path)) {
            model_.emplace(svq::load(path));
            const std::vector<std::string> m = model_->matrices();
            matrices_.insert(m.begin(), m.end());
            for (const std::string& t : model_->tensors()) plain_.insert(t);
        } else {
            ckpt_.emplace(svq::checkpoint::open(path));
        }
    }
    bool quantized_file() const { return model_.has_value(); }
    bool contains(const std::string& name) const {
        return model_ ? matrices_.count(name) || plain_.count(name) : ckpt_->contains(name);
    }
    bool is_matrix(const std::string& name) const { return matrices_.count(name) != 0; }
    std::vector<float> floats(const std::string& name) const {
        if (!model_) return ckpt_->to_float(name);
        return matrices_.count(name) ? model_->dequantize(name) : model_->tensor(name);
    }
    // Elements of `name` (as stored or as decoded).
    std::size_t elements(const std::string& name) const {
        if (!model_) return ckpt_->info(name).elements();
        if (matrices_.count(name)) {
            const auto [r, c] = model_->shape(name);
            return r * c;
        }
        return model_->file().at(name).elements();
    }
    bool floating(const std::string& name) const {
        if (!model_) return is_float(ckpt_->info(name).type);
        return matrices_.count(name) || is_float(model_->file().at(name).type);
    }

private:
    std::optional<svq::model_file> model_;
    std::optional<svq::checkpoint> ckpt_;
    std::set<std::string> matrices_, plain_;
};

// The description ("<name>.svq" metadata entry) of a quantized matrix, parsed.
nlohmann::json description(const svq::model_file& f, const std::string& name) {
    const std::string* text = f.file().metadata(name + ".svq");
    return text ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
}

// Bytes of every tensor stored for matrix `name` (its parts W.svq.*).
std::size_t stored_bytes(const svq::model_file& f, const std::string& name) {
    std::size_t b = 0;
    const std::string prefix = name + ".svq.";
    for (const svq::tensor_info& t : f.file().tensors())
        if (t.name.starts_with(prefix)) b += t.bytes();
    return b;
}

// ---------------------------------------------------------------- info

struct info_args {
    std::string file;
    bool json = false;
};

int run_info(const info_args& a) {
    check_input_path(a.file);
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    std::size_t failures = 0, matrix_weights = 0, matrix_bytes = 0, plain_bytes = 0;
    double matrix_bits = 0.0;
    auto add = [&](const std::string& name, std::vector<std::size_t> shape, const std::string& method,
                   const std::string& config, double bpw, std::size_t bytes, const std::string& checksum) {
        rows.push_back({{"name", name}, {"shape", shape}, {"method", method}, {"config", config}, {"bpw", json_number(bpw)},
                        {"stored_bytes", bytes}, {"checksum", checksum}});
    };
    if (is_svq_file(a.file)) {
        const svq::model_file f = svq::load(a.file);
        std::set<std::string> matrices;
        for (const std::string& m : f.matrices()) matrices.insert(m);
        // Matrices and plain tensors in data order (a matrix where its first part lies).
        std::set<std::string> done;
        for (const svq::tensor_info& t : f.file().tensors()) {
            const std::size_t at = t.name.find(".svq.");
            const std::string name = at == std::string::npos ? t.name : t.name.substr(0, at);
            if (!done.insert(name).second) continue;
            const nlohmann::json d = description(f, name);
            const std::string method = at == std::string::npos ? "plain" : d.value("method", std::string("?"));
            std::string config = "-", status = "ok";
            double bpw = std::nan("");
            std::vector<std::size_t> shape;
            std::size_t bytes = 0;
            try {
                if (method == "plain") {
                    shape = t.shape;
                    bytes = t.bytes();
                    config = std::string(svq::dtype_name(t.type));
                    bpw = 8.0 * static_cast<double>(svq::dtype_size(t.type));
                    const auto* sums = f.file().metadata("svq.checksums");
                    const bool listed = sums && nlohmann::json::parse(*sums, nullptr, false)["tensors"].contains(t.name);
                    if (!listed) status = "none";
                    else if (is_float(t.type)) (void)f.tensor(t.name);  // verifies
                    else status = "unverified";
                    plain_bytes += bytes;
                } else if (method == "crvq_codebooks") {
                    bytes = stored_bytes(f, name);
                    config = fmt::format("{} base, {} extended codebooks", d.value("base", std::string("?")),
                                         d.contains("extended") ? d["extended"].size() : 0);
                    // The codebooks are verified when a matrix that uses them is read.
                    std::string user;
                    for (const std::string& m : matrices)
                        if (description(f, m).value("codebooks", std::string()) == name) user = m;
                    if (user.empty()) status = "unused";
                    else if (d.value("base", std::string()) == "pvq") (void)f.crvq<svq::pvq_base>(user);
                    else (void)f.crvq<svq::kmeans_base>(user);
                    matrix_bytes += bytes;
                } else {
                    const auto [r, c] = f.shape(name);
                    shape = {r, c};
                    bytes = stored_bytes(f, name);
                    if (method == "pvq") {
                        const svq::quantized_matrix q = f.pvq(name);
                        config = svq::to_string(q.config());
                        if (d.value("search", std::string()) == "hessian") config += " (hessian)";
                        bpw = q.bits_per_weight();
                    } else if (method == "rtn") {
                        const svq::rtn_matrix q = f.rtn(name);
                        config = rtn_string(q.config());
                        bpw = q.bits_per_weight();
                    } else if (method == "trellis") {
                        const svq::trellis_matrix q = f.trellis(name);
                        config = svq::to_string(q.config());
                        bpw = q.bits_per_weight();
                    } else if (method == "crvq") {
                        if (d.value("base", std::string()) == "pvq") {
                            const auto q = f.crvq<svq::pvq_base>(name);
                            config = fmt::format("pvq base {}, {} critical", svq::to_string(q.base_part().config()),
                                                 q.critical_channels());
                            bpw = q.bits_per_weight();
                        } else {
                            const auto q = f.crvq<svq::kmeans_base>(name);
                            config = fmt::format("kmeans base, {} critical", q.critical_channels());
                            bpw = q.bits_per_weight();
                        }
                    }
                    matrix_weights += r * c;
                    matrix_bytes += bytes;
                    if (std::isfinite(bpw)) matrix_bits += bpw * static_cast<double>(r * c);
                }
            } catch (const svq::error& e) {
                status = fmt::format("FAILED: {}", e.what());
                ++failures;
            }
            add(name, shape, method, config, bpw, bytes, status);
        }
    } else {
        const svq::checkpoint c = svq::checkpoint::open(a.file);
        for (const std::string& n : c.names()) {
            const svq::tensor_info& t = c.info(n);
            add(n, t.shape, "plain", std::string(svq::dtype_name(t.type)), 8.0 * static_cast<double>(svq::dtype_size(t.type)),
                t.bytes(), "none");
            plain_bytes += t.bytes();
        }
    }
    const std::uintmax_t file_bytes = fs::is_regular_file(a.file) ? fs::file_size(a.file) : 0;
    const double mean_bpw = matrix_weights ? matrix_bits / static_cast<double>(matrix_weights) : std::nan("");
    if (a.json) {
        nlohmann::ordered_json out = {{"file", a.file},
                                      {"tensors", rows},
                                      {"quantized_weights", matrix_weights},
                                      {"quantized_bpw", json_number(mean_bpw)},
                                      {"quantized_bytes", matrix_bytes},
                                      {"plain_bytes", plain_bytes},
                                      {"file_bytes", file_bytes},
                                      {"checksum_failures", failures}};
        std::printf("%s\n", out.dump(2).c_str());
    } else {
        std::size_t wn = 24;
        for (const auto& r : rows) wn = std::max(wn, r["name"].get<std::string>().size());
        std::printf("%-*s  %-11s  %-7s  %-55s  %7s  %10s  %s\n", static_cast<int>(wn), "tensor", "shape", "method", "config",
                    "bpw", "bytes", "checksum");
        for (const auto& r : rows) {
            const std::string bpw = r["bpw"].is_number() ? fmt::format("{:.4f}", r["bpw"].get<double>()) : "-";
            std::printf("%-*s  %-11s  %-7s  %-55s  %7s  %10zu  %s\n", static_cast<int>(wn), r["name"].get<std::string>().c_str(),
                        shape_text(r["shape"].get<std::vector<std::size_t>>()).c_str(), r["method"].get<std::string>().c_str(),
                        r["config"].get<std::string>().c_str(), bpw.c_str(), r["stored_bytes"].get<std::size_t>(),
                        r["checksum"].get<std::string>().c_str());
        }
        std::printf("%zu tensors; quantized: %zu weights at %.4f bpw, %s; plain: %s; file %s (%ju bytes); checksums: %s\n",
                    rows.size(), matrix_weights, mean_bpw, human_bytes(static_cast<double>(matrix_bytes)).c_str(),
                    human_bytes(static_cast<double>(plain_bytes)).c_str(), human_bytes(static_cast<double>(file_bytes)).c_str(),
                    file_bytes, failures ? fmt::format("{} FAILED", failures).c_str() : "all verified");
    }
    if (failures) throw svq::corrupt_data(fmt::format("{}: {} tensor(s) failed verification", a.file, failures));
    return 0;
}

// ---------------------------------------------------------------- dequantize

struct dequantize_args {
    std::string input, output, dtype = "f32";
};

int run_dequantize(const dequantize_args& a) {
    const std::optional<svq::dtype> type = svq::parse_dtype(a.dtype == "f32" ? "F32" : a.dtype == "f16" ? "F16" : a.dtype == "bf16" ? "BF16" : "");
    if (!type) throw svq::invalid_argument(fmt::format("--dtype '{}': expected f32, f16 or bf16", a.dtype));
    check_input_path(a.input);
    check_output_path(a.output);
    svq::safetensors_writer w;
    std::size_t count = 0;
    if (is_svq_file(a.input)) {
        const svq::model_file f = svq::load(a.input);
        const std::vector<std::string> list = f.matrices();
        const std::set<std::string> matrices(list.begin(), list.end());
        std::set<std::string> done;
        for (const svq::tensor_info& t : f.file().tensors()) {
            const std::size_t at = t.name.find(".svq.");
            const std::string name = at == std::string::npos ? t.name : t.name.substr(0, at);
            if (!done.insert(name).second || (at != std::string::npos && !matrices.count(name))) continue;
            if (at != std::string::npos) {
                const auto [r, c] = f.shape(name);
                w.add_floats(name, f.dequantize(name), {r, c}, *type);
            } else if (is_float(t.type)) {
                w.add_floats(name, f.tensor(name), t.shape, *type);
            } else {
                w.add(name, t.type, t.shape, f.file().data(t));
            }
            ++count;
        }
        for (const auto& [key, value] : f.file().metadata())
            if (!key.starts_with("svq.") && !key.ends_with(".svq")) w.set_metadata(key, value);
    } else {
        const svq::checkpoint c = svq::checkpoint::open(a.input);
        for (const std::string& n : c.names()) {
            const svq::tensor_info& t = c.info(n);
            if (is_float(t.type)) w.add_floats(n, c.to_float(n), t.shape, *type);
            else w.add(n, t.type, t.shape, c.file_of(n)->data(t));
            ++count;
        }
    }
    w.write(a.output);
    std::printf("%s: %zu tensors as %s, %ju bytes\n", a.output.c_str(), count, std::string(svq::dtype_name(*type)).c_str(),
                static_cast<std::uintmax_t>(fs::file_size(a.output)));
    return 0;
}

// ---------------------------------------------------------------- compare

struct compare_args {
    std::string reference, quantized;
    bool json = false;
};

int run_compare(const compare_args& a) {
    check_input_path(a.reference);
    check_input_path(a.quantized);
    const svq::checkpoint ref = svq::checkpoint::open(a.reference);
    const float_source q(a.quantized);
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    error_stats total;
    std::size_t compared = 0;
    for (const std::string& n : ref.names()) {
        const svq::tensor_info& t = ref.info(n);
        if (!is_float(t.type) || !q.contains(n) || !q.floating(n)) continue;
        if (q.elements(n) != t.elements())
            throw svq::invalid_argument(fmt::format("tensor '{}': {} elements in {}, {} in {}", n, t.elements(), a.reference,
                                                    q.elements(n), a.quantized));
        const std::vector<float> x = ref.to_float(n), y = q.floats(n);
        const error_stats s = measure(x, y);
        total.signal += s.signal;
        total.noise += s.noise;
        total.max_abs = std::max(total.max_abs, s.max_abs);
        ++compared;
        rows.push_back({{"name", n},
                        {"shape", t.shape},
                        {"quantized", q.is_matrix(n)},
                        {"sqnr_db", json_number(s.sqnr_db())},
                        {"relative_error", json_number(s.relative_error())},
                        {"max_abs_error", s.max_abs}});
    }
    if (compared == 0)
        throw svq::invalid_argument(fmt::format("{} and {} have no floating-point tensor in common", a.reference, a.quantized));
    if (a.json) {
        nlohmann::ordered_json out = {{"reference", a.reference},
                                      {"quantized", a.quantized},
                                      {"tensors", rows},
                                      {"total", {{"sqnr_db", json_number(total.sqnr_db())},
                                                 {"relative_error", json_number(total.relative_error())},
                                                 {"max_abs_error", total.max_abs}}}};
        std::printf("%s\n", out.dump(2).c_str());
        return 0;
    }
    std::size_t wn = 24;
    for (const auto& r : rows) wn = std::max(wn, r["name"].get<std::string>().size());
    std::printf("%-*s  %-11s  %9s  %10s  %10s\n", static_cast<int>(wn), "tensor", "shape", "SQNR dB", "rel. error", "max |err|");
    auto number = [](const nlohmann::ordered_json& v, const char* f) {
        return v.is_number() ? fmt::format(fmt::runtime(f), v.get<double>()) : v.is_string() ? v.get<std::string>() : "-";
    };
    for (const auto& r : rows)
        std::printf("%-*s  %-11s  %9s  %10s  %10.3g\n", static_cast<int>(wn), r["name"].get<std::string>().c_str(),
                    shape_text(r["shape"].get<std::vector<std::size_t>>()).c_str(), number(r["sqnr_db"], "{:.2f}").c_str(),
                    number(r["relative_error"], "{:.4f}").c_str(), r["max_abs_error"].get<double>());
    std::printf("%zu tensors compared; all together: SQNR %.2f dB, relative error %.4f\n", compared, total.sqnr_db(),
                total.relative_error());
    return 0;
}

// ---------------------------------------------------------------- bench

struct bench_args {
    std::string file;
    unsigned threads = 1;
    double min_time = 0.05;
};

// Seconds per call of f: calls repeated until min_time has passed (at least 3).
template <class F>
double time_per_call(F&& f, double min_time) {
    f();  // warm-up
    std::size_t n = 0;
    const auto t0 = clock_type::now();
    double t = 0.0;
    do {
        f();
        ++n;
        t = seconds_since(t0);
    } while (t < min_time || n < 3);
    return t / static_cast<double>(n);
}

int run_bench(const bench_args& a) {
    check_input_path(a.file);
    if (!is_svq_file(a.file)) throw svq::invalid_argument(fmt::format("{}: not an svq file (no svq.version metadata)", a.file));
    if (!(a.min_time > 0.0)) throw svq::invalid_argument(fmt::format("--min-time {}: must be > 0", a.min_time));
    const svq::model_file f = svq::load(a.file);
    std::size_t wn = 24;
    for (const std::string& n : f.matrices()) wn = std::max(wn, n.size());
    std::printf("%-*s  %-11s  %-6s  %12s  %12s  %12s  %8s\n", static_cast<int>(wn), "tensor", "shape", "method",
                "decode Mw/s", "fused GEMV us", "float GEMV us", "fused/fl");
    double sum_decode = 0.0, sum_fused = 0.0, sum_float = 0.0;
    std::size_t weights = 0;
    for (const std::string& n : f.matrices()) {
        const auto [rows, cols] = f.shape(n);
        const std::string method = f.method(n);
        std::vector<float> x(cols), y(rows), out(rows * cols);
        for (std::size_t i = 0; i < cols; ++i) x[i] = std::sin(static_cast<float>(i) + 0.5f);
        double decode = 0.0, fused = 0.0;
        if (method == "pvq") {
            const svq::quantized_matrix q = f.pvq(n);
            const svq::matrix_decoder dec(q);
            decode = time_per_call([&] { dec.dequantize(out, a.threads); }, a.min_time);
            fused = time_per_call([&] { dec.gemv(x, y, a.threads); }, a.min_time);
        } else if (method == "rtn") {
            const svq::rtn_matrix q = f.rtn(n);
            decode = time_per_call([&] { q.dequantize(out); }, a.min_time);
            fused = time_per_call([&] { q.gemv(x, y, a.threads); }, a.min_time);
        } else if (method == "trellis") {
            const svq::trellis_matrix q = f.trellis(n);
            decode = time_per_call([&] { q.dequantize(out, a.threads); }, a.min_time);
            fused = time_per_call([&] { q.gemv(x, y, a.threads); }, a.min_time);
        } else {
            out = f.dequantize(n);  // CRVQ: decode and product through the matrix's own routines
            const nlohmann::json d = description(f, n);
            if (d.value("base", std::string()) == "pvq") {
                const auto q = f.crvq<svq::pvq_base>(n);
                decode = time_per_call([&] { q.dequantize(out); }, a.min_time);
                fused = time_per_call([&] { q.gemv(x, y, a.threads); }, a.min_time);
            } else {
                const auto q = f.crvq<svq::kmeans_base>(n);
                decode = time_per_call([&] { q.dequantize(out); }, a.min_time);
                fused = time_per_call([&] { q.gemv(x, y, a.threads); }, a.min_time);
            }
        }
        // The baseline: y = W x over the decoded floats (Eigen, rows split over the threads).
        const std::vector<float> w = f.dequantize(n);
        const double plain = time_per_call(
            [&] {
                svq::detail::parallel_slices(rows, a.threads, [&](std::size_t first, std::size_t end) {
                    using mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
                    const Eigen::Map<const mat> wm(w.data() + first * cols, static_cast<Eigen::Index>(end - first),
                                                   static_cast<Eigen::Index>(cols));
                    const Eigen::Map<const Eigen::VectorXf> xv(x.data(), static_cast<Eigen::Index>(cols));
                    Eigen::Map<Eigen::VectorXf> yv(y.data() + first, static_cast<Eigen::Index>(end - first));
                    yv.noalias() = wm * xv;
                });
            },
            a.min_time);
        const double mw = static_cast<double>(rows * cols) / decode / 1e6;
        std::printf("%-*s  %-11s  %-6s  %12.1f  %12.2f  %12.2f  %8.2f\n", static_cast<int>(wn), n.c_str(),
                    shape_text({rows, cols}).c_str(), method.c_str(), mw, fused * 1e6, plain * 1e6, fused / plain);
        sum_decode += decode;
        sum_fused += fused;
        sum_float += plain;
        weights += rows * cols;
    }
    if (weights == 0) throw svq::invalid_argument(fmt::format("{}: no quantized matrix to bench", a.file));
    std::printf("all %zu matrices: decode %.1f Mweights/s; one GEMV per matrix: fused %.1f us, float %.1f us (%u thread%s)\n",
                f.matrices().size(), static_cast<double>(weights) / sum_decode / 1e6, sum_fused * 1e6, sum_float * 1e6,
                a.threads, a.threads == 1 ? "" : "s");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    // Allocations up to 32 MB come from the heap, and freed memory stays in
    // it for the next allocation: choosing a configuration builds and frees
    // megabytes of index tables per candidate, and a fresh process would
    // otherwise fault in every page of each anew.
    ::mallopt(M_MMAP_THRESHOLD, 32 << 20);
    ::mallopt(M_TRIM_THRESHOLD, 256 << 20);
    ::mallopt(M_TOP_PAD, 64 << 20);
    CLI::App app{"svq: quantize LLM weight files with pyramid vector quantization (docs/cli.md)", "svq"};
    app.option_defaults()->always_capture_default();
    app.require_subcommand(1);
    app.set_version_flag("--version", fmt::format("svq {}.{}.{}", svq::version_major, svq::version_minor, svq::version_patch));

    quantize_args qa;
    CLI::App* quantize = app.add_subcommand("quantize", "Quantize every 2-D tensor of a checkpoint into an svq file");
    quantize->add_option("input", qa.inputs, ".safetensors file, sharded *.index.json, directory, or .npy files")
        ->required()
        ->default_str("");
    quantize->add_option("-o,--output", qa.output, "Output svq file (.safetensors)")->required();
    quantize->add_option("--bpw", qa.bpw, "Target bits per weight of each tensor (every stored bit counted)")
        ->required()
        ->default_str("");
    quantize->add_option("--method", qa.method, "pvq | hessian (needs --calibration) | crvq (PVQ base at --bpw, plus its "
                                                "extended codebooks) | rtn (round-to-nearest, bits and group from --bpw) | "
                                                "trellis (trellis-coded, the fastest fused GEMV)");
    const CLI::Option* state_bits =
        quantize->add_option("--state-bits", qa.state_bits, "trellis: state bits L (4..16; each 2 more: ~0.3 dB, 4x the "
                                                            "encoding time)");
    quantize->add_option("--calibration", qa.calibration,
                         "Calibration: per tensor T, activations T [n, cols] or X^T X as T.hessian [cols, cols] "
                         "(.safetensors); a .npy of activations for every matrix with that many columns");
    quantize->add_option("--damping", qa.damping, "Hessian damping, a fraction of mean(diag H)");
    quantize->add_flag("--speed", qa.speed, "Only configurations of the fast decoder (N = 8/16/32, one-word index)");
    quantize->add_option("--include", qa.include, "Quantize only tensors whose name matches this regex (search)");
    quantize->add_option("--exclude", qa.exclude, "Keep tensors whose name matches this regex unquantized");
    quantize->add_option("--tensor-bpw", qa.tensor_bpw, "REGEX=BPW: the target of matching tensors (repeatable; last wins)")
        ->allow_extra_args(false)
        ->default_str("");
    quantize->add_option("--threads", qa.threads, "Threads (0: all cores); the output does not depend on it");

    info_args ia;
    CLI::App* info = app.add_subcommand("info", "List a file's tensors: shape, method, config, bpw, bytes, checksums");
    info->add_option("file", ia.file, "svq file (or any checkpoint)")->required();
    info->add_flag("--json", ia.json, "Write JSON to stdout instead of the table");

    dequantize_args da;
    CLI::App* dequantize = app.add_subcommand("dequantize", "Decode every tensor back to floats, same names");
    dequantize->add_option("input", da.input, "svq file (or a float checkpoint, converted)")->required();
    dequantize->add_option("-o,--output", da.output, "Output .safetensors")->required();
    dequantize->add_option("--dtype", da.dtype, "f32 | f16 | bf16");

    compare_args ca;
    CLI::App* compare = app.add_subcommand("compare", "SQNR and relative error of every tensor in both files");
    compare->add_option("reference", ca.reference, "Reference checkpoint")->required();
    compare->add_option("quantized", ca.quantized, "svq file or float checkpoint")->required();
    compare->add_flag("--json", ca.json, "Write JSON to stdout instead of the table");

    bench_args ba;
    CLI::App* bench = app.add_subcommand("bench", "Decode and fused GEMV speed of every matrix, against a float GEMV");
    bench->add_option("file", ba.file, "svq file")->required();
    bench->add_option("--threads", ba.threads, "Threads (0: all cores)");
    bench->add_option("--min-time", ba.min_time, "Seconds each measurement runs at least");

    // An unknown command word is named as such (CLI11 would only say that a subcommand is required).
    if (argc > 1 && argv[1][0] != '-' && !std::set<std::string>{"quantize", "info", "dequantize", "compare", "bench"}.count(argv[1])) {
        std::fprintf(stderr, "svq: error: unknown command '%s' (commands: quantize, info, dequantize, compare, bench)\n",
                     argv[1]);
        return 2;
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& e) {  // --help, --version
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::string msg = e.what();
        std::replace(msg.begin(), msg.end(), '\n', ' ');
        std::fprintf(stderr, "svq: error: %s (see svq %s--help)\n", msg.c_str(),
                     app.get_subcommands().empty() ? "" : (app.get_subcommands().front()->get_name() + " ").c_str());
        return 2;
    }
    try {
        if (*quantize) {
            qa.state_bits_given = state_bits->count() > 0;
            return run_quantize(qa);
        }
        if (*info) return run_info(ia);
        if (*dequantize) return run_dequantize(da);
        if (*compare) return run_compare(ca);
        if (*bench) return run_bench(ba);
        return 2;
    } catch (const svq::error& e) {
        std::fprintf(stderr, "svq: error: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {  // filesystem errors and the like
        std::fprintf(stderr, "svq: error: %s\n", e.what());
        return 1;
    }
}
