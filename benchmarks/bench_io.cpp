// Loading a quantized matrix from a file: mapped (svq::load's default: the
// PVQ words are read where they lie in the mapping, no copy) against read into
// memory, each followed by a GEMV over every row (matrix_decoder::gemv, which
// touches every word), and loading with and without checksum verification.
//
// The file: one PVQ matrix of 8192 x 4096 at about 4 bpw in the speed
// configuration (N = 16: the decoder's index tables are a few kB, so the
// anonymous memory a load adds is what it copies; the N = 128 configurations'
// tables are megabytes, built once per matrix whatever the loading), its rows are 32
// copies of a quantized 256 x 4096 block: rows are bit-packed back to back
// and 256 rows fill whole 64-bit words, so the copies are a valid matrix),
// written once to the temporary directory. Counters of the load benchmarks:
//   file_MB          the file's size
//   anon_per_file    growth of RssAnon (/proc/self/status: the process's
//                    anonymous memory, i.e. copies) from before the load to
//                    after the GEMV, divided by the file size: ~0 mapped, ~1 read
//   peak_per_file    growth of VmHWM (peak RSS, reset through
//                    /proc/self/clear_refs before the load) over VmRSS before
//                    it, divided by the file size: both ~1, since a mapped
//                    file's pages count in RSS as file pages (page cache,
//                    shared and reclaimable), not as a copy
// The largest value over the iterations is reported.
#include <common/synthetic.hpp>

#include <svq/io/quantized_file.hpp>
#include <svq/kernels/gemv.hpp>
#include <svq/quantize.hpp>

#include "bench_main.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <malloc.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

constexpr std::size_t rows = 8192, cols = 4096, block_rows = 256;

// A field of /proc/self/status in bytes (its value is in kB).
double status_bytes(const std::string& field) {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.starts_with(field + ":")) return 1024.0 * std::stod(line.substr(field.size() + 1));
    return 0.0;
}
void reset_peak() {
    std::ofstream f("/proc/self/clear_refs");
    f << "5";
}

struct test_file {
    std::filesystem::path path;
    double bytes = 0.0;
    std::string config;
    test_file() {
        const std::vector<float> w = svq::examples::gaussian_matrix(block_rows, cols, 1);
        const svq::quantized_matrix block = svq::quantize(w, block_rows, cols, {.target_bpw = 4.0, .choice = svq::speed_config_options()});
        std::vector<std::uint64_t> words;
        for (std::size_t c = 0; c < rows / block_rows; ++c)
            words.insert(words.end(), block.words().begin(), block.words().end());
        const svq::quantized_matrix q(rows, cols, block.config(), block.reference_scale(), std::move(words));
        path = std::filesystem::temp_directory_path() / fmt::format("svq_bench_io_{}.safetensors", ::getpid());
        svq::save(path, "w", q);
        bytes = static_cast<double>(std::filesystem::file_size(path));
        config = fmt::format("{} x {}, {}, {:.3f} bpw, {:.1f} MB", rows, cols, to_string(q.config()),
                             q.layout().bits_per_weight(), bytes / 1e6);
    }
    ~test_file() {
        std::error_code ec;
        std::filesystem::remove(path, ec);
    }
};
const test_file& file() {
    static const test_file f;
    return f;
}

// Load (mapped or read), decode every row in a GEMV; memory counters.
void bm_load_gemv(benchmark::State& state) {
    const bool mmap = state.range(0) != 0;
    const test_file& f = file();
    const std::vector<float> x = svq::examples::gaussian_matrix(1, cols, 2);
    std::vector<float> y(rows);
    double anon = 0.0, peak = 0.0;
    for (auto _ : state) {
        const double anon_before = status_bytes("RssAnon"), rss_before = status_bytes("VmRSS");
        reset_peak();
        {
            const svq::model_file m = svq::load(f.path, {.verify_checksums = false, .mmap = mmap});
            const svq::quantized_matrix q = m.pvq("w");
            const svq::matrix_decoder dec(q);
            dec.gemv(x, y);
            benchmark::DoNotOptimize(y.data());
            anon = std::max(anon, status_bytes("RssAnon") - anon_before);
            peak = std::max(peak, status_bytes("VmHWM") - rss_before);
        }
    }
    state.counters["file_MB"] = f.bytes / 1e6;
    state.counters["anon_per_file"] = anon / f.bytes;
    state.counters["peak_per_file"] = peak / f.bytes;
    state.SetLabel(mmap ? "mmap" : "read");
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(rows * cols));
}

// Load (mapped) and open the matrix, with or without checksum verification.
void bm_load(benchmark::State& state) {
    const bool verify = state.range(0) != 0;
    const test_file& f = file();
    for (auto _ : state) {
        const svq::model_file m = svq::load(f.path, {.verify_checksums = verify, .mmap = true});
        const svq::quantized_matrix q = m.pvq("w");
        benchmark::DoNotOptimize(q.words().data());
    }
    state.counters["file_MB"] = f.bytes / 1e6;
    state.SetLabel(verify ? "verify checksums" : "no verification");
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(f.bytes));
}

}  // namespace

BENCHMARK(bm_load_gemv)->Arg(1)->Arg(0)->ArgName("mmap")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_load)->Arg(1)->Arg(0)->ArgName("verify")->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
    // Fixed malloc thresholds: a freed copy goes back to the system at once,
    // so each iteration's RssAnon growth is its own.
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 20);
    return svq::bench::main(argc, argv, {{"file", file().config}, {"threads", "one"}});
}
