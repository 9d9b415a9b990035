// The command-line tool against the library: a 4096 x 4096 F16 tensor in a
// safetensors file goes through `svq quantize --bpw 3 --threads 2` (the
// program, run as a child process: reading and converting the file, choosing
// the configuration, quantizing, measuring the SQNR, writing the output), and
// the same weights (the F16 values as floats) through the in-memory
// `svq::quantize(w, 4096, 4096, {.target_bpw = 3, .threads = 2})`, in the
// same iteration. The program's output is loaded and must decode bit for bit
// to the in-memory result (the benchmark fails otherwise).
//
// The weights: Gaussian, each row scaled by a log-uniform factor in [0.5, 2]
// (rows of a trained matrix differ in scale), stored as F16.
// Three iterations, each timing both (the reported time is the program's).
// Counters, totals over the iterations:
//   in_memory_s        seconds of svq::quantize
//   cli_s              seconds of the `svq quantize` process, start to exit
//   cli_per_in_memory  the program's throughput over the library's
//                      (in_memory_s / cli_s): the target is >= 0.9
//   bpw                the chosen configuration's bits per weight
#include <common/synthetic.hpp>

#include <svq/core/half.hpp>
#include <svq/io/quantized_file.hpp>
#include <svq/io/safetensors.hpp>
#include <svq/quantize.hpp>

#include "bench_main.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {

namespace fs = std::filesystem;
constexpr std::size_t side = 4096;
constexpr double target_bpw = 3.0;
constexpr unsigned threads = 2;

struct f16_input {
    fs::path dir, file;
    std::vector<float> weights;  // the F16 values as floats
};

const f16_input& input() {
    static const f16_input in = [] {
        f16_input r;
        r.dir = fs::temp_directory_path() / fmt::format("svq_bench_cli_{}", ::getpid());
        fs::create_directories(r.dir);
        r.file = r.dir / "w.safetensors";
        std::vector<float> w = svq::examples::gaussian_matrix(side, side, 0x5eed);
        std::mt19937_64 rng(7);
        std::uniform_real_distribution<double> u(std::log(0.5), std::log(2.0));
        std::vector<std::byte> bytes(w.size() * 2);
        for (std::size_t i = 0; i < side; ++i) {
            const float s = static_cast<float>(std::exp(u(rng)));
            for (std::size_t j = 0; j < side; ++j) {
                const std::uint16_t h = svq::float_to_half(0.02f * s * w[i * side + j]);
                std::memcpy(bytes.data() + 2 * (i * side + j), &h, 2);
                w[i * side + j] = svq::half_to_float(h);
            }
        }
        svq::safetensors_writer out;
        out.add("layer.weight", svq::dtype::f16, {side, side}, bytes);
        out.write(r.file);
        r.weights = std::move(w);
        return r;
    }();
    return in;
}

double seconds(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void BM_svq_quantize_f16_file(benchmark::State& state) {
    const f16_input& in = input();
    const fs::path out = in.dir / "q.safetensors";
    // Run with posix_spawn (no copy of this process's page tables, unlike
    // fork in std::system), output to a log file.
    const std::string tool = SVQ_TOOL, file = in.file.string(), out_file = out.string(), log = (in.dir / "log.txt").string();
    const std::string bpw_text = fmt::format("{}", target_bpw), threads_text = fmt::format("{}", threads);
    std::vector<std::string> args_text = {tool, "quantize", file, "-o", out_file, "--bpw", bpw_text, "--threads", threads_text};
    std::vector<char*> args;
    for (std::string& a : args_text) args.push_back(a.data());
    args.push_back(nullptr);
    auto run_tool = [&]() -> int {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        pid_t pid = 0;
        int status = 0;
        const int rc = posix_spawn(&pid, tool.c_str(), &actions, nullptr, args.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (rc != 0) return rc;
        if (::waitpid(pid, &status, 0) != pid) return -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    };
    double mem_s = 0.0, cli_s = 0.0, bpw = 0.0;
    for (auto _ : state) {
        auto t0 = std::chrono::steady_clock::now();
        const svq::quantized_matrix q =
            svq::quantize(in.weights, side, side, {.target_bpw = target_bpw, .threads = threads});
        mem_s += seconds(t0);
        t0 = std::chrono::steady_clock::now();
        const int rc = run_tool();
        const double cli = seconds(t0);
        cli_s += cli;
        state.SetIterationTime(cli);
        if (rc != 0) {
            state.SkipWithError(fmt::format("svq quantize exited with {} (see {})", rc, log).c_str());
            break;
        }
        const svq::model_file f = svq::load(out);
        const std::vector<float> a = q.dequantize(), b = f.dequantize("layer.weight");
        if (a.size() != b.size() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) != 0) {
            state.SkipWithError("the program's output does not decode to the in-memory result");
            break;
        }
        bpw = q.bits_per_weight();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(side * side));
    state.counters["in_memory_s"] = mem_s;
    state.counters["cli_s"] = cli_s;
    state.counters["cli_per_in_memory"] = cli_s > 0 ? mem_s / cli_s : 0.0;
    state.counters["bpw"] = bpw;
}
BENCHMARK(BM_svq_quantize_f16_file)->Iterations(3)->Unit(benchmark::kSecond)->UseManualTime();

}  // namespace

int main(int argc, char** argv) {
    const int rc = svq::bench::main(argc, argv,
                                    {{"tool", SVQ_TOOL},
                                     {"matrix", fmt::format("{} x {} F16 in a safetensors file, {} bpw, {} threads", side,
                                                            side, target_bpw, threads)}});
    std::error_code ec;
    fs::remove_all(fs::temp_directory_path() / fmt::format("svq_bench_cli_{}", ::getpid()), ec);
    return rc;
}
