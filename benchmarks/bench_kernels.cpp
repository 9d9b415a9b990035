// svq_bench_kernels: fast decoding and fused GEMV of a 4096 x 4096 iid
// Gaussian matrix quantized at about 2, 3 and 4 bpw (configurations chosen by
// choose_config before the timing), one thread unless the name says threads.
// Arguments: (bpw, speed): speed 0 = the auto-chosen configuration (N = 128,
// multi-word index), 1 = the speed configuration (speed_config_options: N = 16
// or 32, index in one word, matrix_decoder's dense path; rotated, as chosen),
// 2 = the same configuration without the rotation (dequantize skips the
// inverse Walsh-Hadamard transform: what it costs); gemv_batch has a third
// argument, the number of vectors (1, 4, 16, 64), next to bm_float_gemm,
// Eigen's float GEMM of as many vectors on the dequantized matrix (counter
// vs_float_gemm); gemv_fused_threads runs two threads (counter vs_one_thread:
// the one-thread fused GEMV in this run / this time). Counters: dense (1 when
// the dense path decodes), table_bytes (the full group's unrank tables).
// In the same run: the reference quantized_matrix::dequantize, a float GEMV
// (Eigen) on the dequantized matrix, dequantize-then-GEMV, and a memcpy of the
// packed bytes. items_per_second = weights per second (gemv_batch: weights x
// vectors). Counters: vs_memcpy = memcpy time of the packed bytes / this time,
// vs_float_gemv = float GEMV time / this time (both measured in this run,
// median of 5).
// The trellis codec (trellis/trellis.hpp) on the same matrix, argument bpw:
// the configuration trellis_config_for(4096, 4096, bpw) (L = 12, rotated),
// quantized before the timing on all cores: bm_trellis_gemv (one thread),
// bm_trellis_dequantize, bm_trellis_gemv_batch/<bpw>/<vectors> (counter
// vs_float_gemm), bm_trellis_gemv_threads (two threads, vs_one_thread);
// vs_float_gemv against an Eigen float GEMV of its own dequantized matrix in
// this run; counter sqnr_db: the SQNR of that matrix.
#include <common/synthetic.hpp>

#include <svq/core/eigen.hpp>
#include <svq/kernels/gemv.hpp>
#include <svq/matrix/auto_config.hpp>
#include <svq/matrix/metrics.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/trellis/trellis.hpp>

#include "bench_main.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr std::size_t side = 4096;

const std::vector<float>& matrix() {
    static const std::vector<float> w = svq::examples::gaussian_matrix(side, side, 1);
    return w;
}

const std::vector<float>& vectors() {
    static const std::vector<float> x = svq::examples::gaussian_matrix(64, side, 2);
    return x;
}

struct prepared {
    svq::quantized_matrix q;
    std::unique_ptr<svq::matrix_decoder> dec;
    std::vector<float> wq;  // reference dequantized
    double memcpy_s = 0.0, float_gemv_s = 0.0;
    std::map<std::size_t, double> float_gemm_s;  // vectors -> median seconds (float_gemm_seconds)
};

template <class F>
double median_seconds(F&& f, int reps = 5) {
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
        const auto a = std::chrono::steady_clock::now();
        f();
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

void float_gemv(const std::vector<float>& w, const float* x, float* y) {
    const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(
        w.data(), static_cast<Eigen::Index>(side), static_cast<Eigen::Index>(side));
    Eigen::Map<Eigen::VectorXf>(y, static_cast<Eigen::Index>(side)).noalias() =
        m * Eigen::Map<const Eigen::VectorXf>(x, static_cast<Eigen::Index>(side));
}

// Median seconds of that GEMV on the dequantized matrix wq (the baseline of vs_float_gemv).
double float_gemv_seconds(const std::vector<float>& wq) {
    std::vector<float> y(side);
    return median_seconds([&] {
        float_gemv(wq, vectors().data(), y.data());
        benchmark::DoNotOptimize(y.data());
    });
}

// bpw: 2, 3 or 4; speed: 0 for the auto-chosen configuration (N = 128), 1 for
// the speed configuration (svq::speed_config_options: index in one word, the
// dense decode path), 2 for the speed configuration without the rotation.
prepared& get(int bpw, int speed) {
    static std::map<std::pair<int, int>, prepared> cache;
    const std::pair<int, int> key{bpw, speed};
    auto it = cache.find(key);
    if (it == cache.end()) {
        const svq::auto_config_options opt = speed != 0 ? svq::speed_config_options() : svq::auto_config_options{};
        svq::matrix_config c = svq::choose_config(matrix(), side, side, static_cast<double>(bpw), opt).config;
        if (speed == 2) c.rotate = false;
        prepared p{svq::quantize(matrix(), side, side, c), nullptr, {}, 0.0, 0.0, {}};
        p.wq = p.q.dequantize();
        it = cache.emplace(key, std::move(p)).first;
        prepared& r = it->second;
        r.dec = std::make_unique<svq::matrix_decoder>(r.q);
        std::vector<std::uint64_t> dst(r.q.words().size());
        r.memcpy_s = median_seconds([&] {
            std::memcpy(dst.data(), r.q.words().data(), dst.size() * 8);
            benchmark::DoNotOptimize(dst.data());
            benchmark::ClobberMemory();
        });
        r.float_gemv_s = float_gemv_seconds(r.wq);
    }
    return it->second;
}

void finish(benchmark::State& state, const prepared& p, double items_per_iter) {
    state.SetItemsProcessed(static_cast<std::int64_t>(static_cast<double>(state.iterations()) * items_per_iter));
    state.counters["bpw"] = p.q.bits_per_weight();
    state.counters["dense"] = p.dec->full_index().dense() ? 1.0 : 0.0;
    state.counters["table_bytes"] = static_cast<double>(p.dec->full_index().table_bytes());
    state.SetLabel(svq::to_string(p.q.config()));
}

// Ratios need this benchmark's own time per iteration: measured with a clock around the loop.
class timer {
public:
    void start() { a_ = std::chrono::steady_clock::now(); }
    void stop() { total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - a_).count(); }
    double total() const { return total_; }

private:
    std::chrono::steady_clock::time_point a_{};
    double total_ = 0.0;
};

// Sets the ratios to this run's memcpy and float GEMV; returns the seconds per iteration.
double ratios(benchmark::State& state, const prepared& p, double seconds) {
    const double per = seconds / static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
    state.counters["vs_memcpy"] = p.memcpy_s / per;
    state.counters["vs_float_gemv"] = p.float_gemv_s / per;
    return per;
}

// Runs body once per iteration with a clock around it; returns the total seconds.
template <class Body>
double clocked(benchmark::State& state, Body&& body) {
    timer tm;
    for (auto _ : state) {
        tm.start();
        body();
        tm.stop();
    }
    return tm.total();
}

// Runs body once per iteration with a clock around it, then reports items/s and
// the ratios to this run's memcpy and float GEMV. Returns the seconds per
// iteration (for a benchmark's own ratios).
template <class Body>
double timed(benchmark::State& state, const prepared& p, double items, Body&& body) {
    const double total = clocked(state, body);
    finish(state, p, items);
    return ratios(state, p, total);
}

void bm_memcpy_packed(benchmark::State& state) {
    prepared& p = get(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
    std::vector<std::uint64_t> dst(p.q.words().size());
    timed(state, p, side * side, [&] {
        std::memcpy(dst.data(), p.q.words().data(), dst.size() * 8);
        benchmark::DoNotOptimize(dst.data());
        benchmark::ClobberMemory();
    });
}

void bm_float_gemv(benchmark::State& state) {
    prepared& p = get(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
    std::vector<float> y(side);
    timed(state, p, side * side, [&] {
        float_gemv(p.wq, vectors().data(), y.data());
        benchmark::DoNotOptimize(y.data());
    });
}

void bm_dequantize_reference(benchmark::State& state) {
    prepared& p = get(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
    std::vector<float> out(side * side);
    timed(state, p, side * side, [&] {
        p.q.dequantize(out);
        benchmark::DoNotOptimize(out.data());
    });
}

void bm_dequantize_fast(benchmark::State& state) {
    prepared& p = get(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
    std::vector<float> out(side * side);
    timed(state, p, side * side, [&] {
        p.dec->dequantize(out);
        benchmark::DoNotOptimize(out.data());
    });
}

// Decode only (pulses scaled, no inverse rotation): where the time of dequantize goes.
void bm_decode_rotated(benchmark::State& state) {
    prepared& p = get(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
    std::vector<float> out(side * side);
    timed(state, p, side * side, [&] {
        for (std::size_t r = 0; r < side; ++r) p.dec->decode_row_rotated(r, out.data() + r * side);
        benchmark::DoNotOptimize(out.data());
    });
}

void bm_gemv_fused(benchmark::State& state) {
    prepared& p = get(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
    std::vector<float> y(side);
    const std::span<const float> x(vectors().data(), side);
    timed(state, p, side * side, [&] {
        p.dec->gemv(x, y);
        benchmark::DoNotOptimize(y.data());
    });
}

void bm_gemv_dequantize_then_float(benchmark::State& state) {
    prepared& p = get(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
    std::vector<float> w(side * side), y(side);
    timed(state, p, side * side, [&] {
        p.dec->dequantize(w);
        float_gemv(w, vectors().data(), y.data());
        benchmark::DoNotOptimize(y.data());
    });
}

// Y = W X for `batch` vectors by Eigen's float GEMM on the dequantized matrix
// (X: side x batch, column-major; batch 1 is Eigen's GEMV).
void float_gemm(const std::vector<float>& w, const float* x, float* y, std::size_t batch) {
    const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(
        w.data(), static_cast<Eigen::Index>(side), static_cast<Eigen::Index>(side));
    const auto b = static_cast<Eigen::Index>(batch);
    Eigen::Map<Eigen::MatrixXf>(y, static_cast<Eigen::Index>(side), b).noalias() =
        m * Eigen::Map<const Eigen::MatrixXf>(x, static_cast<Eigen::Index>(side), b);
}

// Median seconds of Eigen's GEMM with `batch` vectors on the dequantized matrix wq.
double float_gemm_median(const std::vector<float>& wq, std::size_t batch) {
    std::vector<float> y(side * batch);
    return median_seconds([&] {
        float_gemm(wq, vectors().data(), y.data(), batch);
        benchmark::DoNotOptimize(y.data());
    });
}

// The same on p's dequantized matrix, measured once per run.
double float_gemm_seconds(prepared& p, std::size_t batch) {
    auto it = p.float_gemm_s.find(batch);
    if (it != p.float_gemm_s.end()) return it->second;
    return p.float_gemm_s[batch] = float_gemm_median(p.wq, batch);
}

// Arguments (bpw, speed, vectors). Counter vs_float_gemm: Eigen's float GEMM
// of the same vectors on the dequantized matrix (bm_float_gemm, median of 5
// in this run) / this time.
void bm_gemv_batch(benchmark::State& state) {
    prepared& p = get(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
    const auto batch = static_cast<std::size_t>(state.range(2));
    std::vector<float> y(side * batch);
    const std::span<const float> x(vectors().data(), side * batch);
    const double gemm = float_gemm_seconds(p, batch);
    const double per = timed(state, p, static_cast<double>(side * side * batch), [&] {
        p.dec->gemv_batch(x, y, batch);
        benchmark::DoNotOptimize(y.data());
    });
    state.counters["vs_float_gemm"] = gemm / per;
}

void bm_float_gemm(benchmark::State& state) {
    prepared& p = get(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
    const auto batch = static_cast<std::size_t>(state.range(2));
    std::vector<float> y(side * batch);
    timed(state, p, static_cast<double>(side * side * batch), [&] {
        float_gemm(p.wq, vectors().data(), y.data(), batch);
        benchmark::DoNotOptimize(y.data());
    });
}

// Two threads. Counter vs_one_thread: the one-thread fused GEMV (median of 5
// in this run, just before) / this time.
void bm_gemv_fused_threads(benchmark::State& state) {
    prepared& p = get(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
    std::vector<float> y(side);
    const std::span<const float> x(vectors().data(), side);
    const double one = median_seconds([&] {
        p.dec->gemv(x, y, 1);
        benchmark::DoNotOptimize(y.data());
    });
    const double per = timed(state, p, side * side, [&] {
        p.dec->gemv(x, y, 2);
        benchmark::DoNotOptimize(y.data());
    });
    state.counters["vs_one_thread"] = one / per;
}

struct trellis_prepared {
    svq::trellis_matrix q;
    std::vector<float> wq;  // dequantized
    double float_gemv_s = 0.0, sqnr_db = 0.0;
};

trellis_prepared& get_trellis(int bpw) {
    static std::map<int, trellis_prepared> cache;
    auto it = cache.find(bpw);
    if (it == cache.end()) {
        trellis_prepared p;
        p.q = svq::quantize_trellis(matrix(), side, side, svq::trellis_config_for(side, side, bpw), 0);
        p.wq = p.q.dequantize();
        p.sqnr_db = svq::sqnr_db(matrix(), p.wq);
        p.float_gemv_s = float_gemv_seconds(p.wq);
        it = cache.emplace(bpw, std::move(p)).first;
    }
    return it->second;
}

// As timed, for the trellis matrix: items/s, bpw, sqnr_db, vs_float_gemv;
// returns the seconds per iteration.
template <class Body>
double trellis_timed(benchmark::State& state, const trellis_prepared& p, double items, Body&& body) {
    const double total = clocked(state, body);
    state.SetItemsProcessed(static_cast<std::int64_t>(static_cast<double>(state.iterations()) * items));
    state.counters["bpw"] = p.q.bits_per_weight();
    state.counters["sqnr_db"] = p.sqnr_db;
    state.SetLabel(svq::to_string(p.q.config()));
    const double per = total / static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
    state.counters["vs_float_gemv"] = p.float_gemv_s / per;
    return per;
}

void bm_trellis_gemv(benchmark::State& state) {
    trellis_prepared& p = get_trellis(static_cast<int>(state.range(0)));
    std::vector<float> y(side);
    const std::span<const float> x(vectors().data(), side);
    trellis_timed(state, p, side * side, [&] {
        p.q.gemv(x, y);
        benchmark::DoNotOptimize(y.data());
    });
}

void bm_trellis_dequantize(benchmark::State& state) {
    trellis_prepared& p = get_trellis(static_cast<int>(state.range(0)));
    std::vector<float> out(side * side);
    trellis_timed(state, p, side * side, [&] {
        p.q.dequantize(out);
        benchmark::DoNotOptimize(out.data());
    });
}

void bm_trellis_gemv_batch(benchmark::State& state) {
    trellis_prepared& p = get_trellis(static_cast<int>(state.range(0)));
    const auto batch = static_cast<std::size_t>(state.range(1));
    std::vector<float> y(side * batch);
    const std::span<const float> x(vectors().data(), side * batch);
    const double gemm = float_gemm_median(p.wq, batch);
    const double per = trellis_timed(state, p, static_cast<double>(side * side * batch), [&] {
        p.q.gemv_batch(x, y, batch);
        benchmark::DoNotOptimize(y.data());
    });
    state.counters["vs_float_gemm"] = gemm / per;
}

void bm_trellis_gemv_threads(benchmark::State& state) {
    trellis_prepared& p = get_trellis(static_cast<int>(state.range(0)));
    std::vector<float> y(side);
    const std::span<const float> x(vectors().data(), side);
    const double one = median_seconds([&] {
        p.q.gemv(x, y, 1);
        benchmark::DoNotOptimize(y.data());
    });
    const double per = trellis_timed(state, p, side * side, [&] {
        p.q.gemv(x, y, 2);
        benchmark::DoNotOptimize(y.data());
    });
    state.counters["vs_one_thread"] = one / per;
}

// The fastest repetition (with --benchmark_repetitions): the run least
// disturbed by the rest of the machine, next to the mean and median.
double fastest(const std::vector<double>& v) { return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end()); }

}  // namespace

BENCHMARK(bm_memcpy_packed)->ArgsProduct({{2, 3, 4}, {0, 1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime()->ComputeStatistics("min", fastest);
BENCHMARK(bm_float_gemv)->ArgsProduct({{2, 3, 4}, {0, 1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime()->ComputeStatistics("min", fastest);
BENCHMARK(bm_dequantize_reference)
    ->ArgsProduct({{2, 3, 4}, {0, 1, 2}})
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()->ComputeStatistics("min", fastest);
BENCHMARK(bm_dequantize_fast)->ArgsProduct({{2, 3, 4}, {0, 1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime()->ComputeStatistics("min", fastest);
BENCHMARK(bm_decode_rotated)->ArgsProduct({{2, 3, 4}, {0, 1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime()->ComputeStatistics("min", fastest);
BENCHMARK(bm_gemv_fused)->ArgsProduct({{2, 3, 4}, {0, 1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime()->ComputeStatistics("min", fastest);
BENCHMARK(bm_gemv_dequantize_then_float)
    ->ArgsProduct({{2, 3, 4}, {0, 1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()->ComputeStatistics("min", fastest);
BENCHMARK(bm_float_gemm)
    ->ArgsProduct({{3}, {0, 1}, {1, 4, 16, 64}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()->ComputeStatistics("min", fastest);
BENCHMARK(bm_gemv_batch)
    ->ArgsProduct({{3}, {0, 1}, {1, 4, 16, 64}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()->ComputeStatistics("min", fastest);
BENCHMARK(bm_gemv_fused_threads)
    ->Args({3, 0})
    ->Args({3, 1})
    ->Args({3, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()->ComputeStatistics("min", fastest);

BENCHMARK(bm_trellis_gemv)->DenseRange(2, 4)->Unit(benchmark::kMillisecond)->UseRealTime()->ComputeStatistics("min", fastest);
BENCHMARK(bm_trellis_dequantize)->DenseRange(2, 4)->Unit(benchmark::kMillisecond)->UseRealTime()->ComputeStatistics("min", fastest);
BENCHMARK(bm_trellis_gemv_batch)
    ->ArgsProduct({{3}, {1, 4, 16, 64}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()->ComputeStatistics("min", fastest);
BENCHMARK(bm_trellis_gemv_threads)->Arg(3)->Unit(benchmark::kMillisecond)->UseRealTime()->ComputeStatistics("min", fastest);

int main(int argc, char** argv) {
    return svq::bench::main(argc, argv,
                            {{"matrix", fmt::format("{} x {} iid N(0,1), one thread unless _threads", side, side)}});
}
