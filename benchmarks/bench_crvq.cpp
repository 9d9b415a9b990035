// svq_bench_crvq: CRVQ on a 4096 x 4096 layer (Student-t(4) weights) with the
// paper's defaults (base d = 8, 2^8 entries; 3 extended codebooks of 2^8
// entries on the 2% most important channels, base in importance order), the
// diagonal of a synthetic Hessian (4096 correlated tokens, damped 0.01) as
// the metric. k-means: 4 Lloyd iterations on 65,536 sampled vectors per
// codebook (kmeans_options{4}); refine_rounds = 1; beam 4. One thread.
//   BM_crvq_encode      the whole quantizer, one iteration
//   BM_crvq_decode      dequantize of the result, Mweights/s
//   BM_crvq_gemv        y = Wq x of the result (one vector), Mweights/s
//   BM_memcpy           copy of the same float output, for the ratio

#include <svq/crvq/crvq.hpp>
#include <svq/hessian/calibration.hpp>

#include "bench_layer.hpp"
#include "bench_main.hpp"

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstring>
#include <vector>

namespace {

constexpr std::size_t side = svq::bench::layer_side;
const std::vector<float>& weights() { return svq::bench::layer_weights(); }
const std::vector<double>& hessian() { return svq::bench::layer_hessian(); }

svq::crvq_config<svq::kmeans_base> config() {
    svq::crvq_config<svq::kmeans_base> c;
    c.kmeans.iterations = 4;
    c.refine_rounds = 1;
    return c;
}

const svq::crvq_model<svq::kmeans_base>& model() {
    static const svq::crvq_model<svq::kmeans_base> m = svq::crvq_quantize(weights(), side, side, hessian(), config());
    return m;
}

void BM_crvq_encode(benchmark::State& state) {
    (void)hessian();  // built outside the timing
    double bpw = 0;
    for (auto _ : state) {
        const svq::crvq_model<svq::kmeans_base> m = svq::crvq_quantize(weights(), side, side, hessian(), config());
        bpw = m.bits_per_weight();
        benchmark::DoNotOptimize(m.matrices.front().base_part().data());
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(side * side));
    state.counters["bpw"] = bpw;
}

void BM_crvq_decode(benchmark::State& state) {
    const svq::crvq_matrix<svq::kmeans_base>& q = model().matrices.front();
    for (auto _ : state) {
        std::vector<float> out = q.dequantize();
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(side * side));
    state.counters["bpw"] = model().bits_per_weight();
}

void BM_crvq_gemv(benchmark::State& state) {
    const svq::crvq_matrix<svq::kmeans_base>& q = model().matrices.front();
    const std::vector<float> x(weights().begin(), weights().begin() + static_cast<std::ptrdiff_t>(side));
    std::vector<float> y(side);
    for (auto _ : state) {
        q.gemv(x, y);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(side * side));
}

void BM_memcpy(benchmark::State& state) {
    const std::vector<float>& w = weights();
    std::vector<float> out(w.size());
    for (auto _ : state) {
        std::memcpy(out.data(), w.data(), w.size() * sizeof(float));
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(side * side));
}

}  // namespace

BENCHMARK(BM_crvq_encode)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK(BM_crvq_decode)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_crvq_gemv)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_memcpy)->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) { return svq::bench::main(argc, argv); }
