// svq_bench_hessian: time to quantize a 4096 x 4096 layer (Student-t(4)
// weights) against a 4096 x 4096 Hessian (4096 correlated synthetic tokens,
// damped 0.01), Hessian PVQ at one and two threads, next to the plain
// quantizer with the same configuration and GPTQ-RTN int3/g32, in the same
// run. One iteration each (the Hessian factor is part of the time). The
// configuration: N = 16 with 3 gain bits and the largest K at <= 3 bpw (what
// the Hessian choose_config tends to pick on correlated activations).

#include <svq/hessian/calibration.hpp>
#include <svq/hessian/gptq.hpp>
#include <svq/matrix/auto_config.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/quantize.hpp>

#include "bench_layer.hpp"
#include "bench_main.hpp"

#include <benchmark/benchmark.h>

#include <vector>

namespace {

constexpr std::size_t side = svq::bench::layer_side;
const std::vector<float>& weights() { return svq::bench::layer_weights(); }
const std::vector<double>& hessian() { return svq::bench::layer_hessian(); }

svq::matrix_config config() {
    for (const svq::config_candidate& c : svq::candidate_configs(side, side, 3.0))
        if (c.config.group_dim == 16 && c.config.gain_bits == 3 && c.config.row_scale_bits == 16) return c.config;
    return svq::matrix_config{};
}

void finish(benchmark::State& state, double bpw) {
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(side * side));
    state.counters["bpw"] = bpw;
}

void BM_quantize_plain(benchmark::State& state) {
    const svq::matrix_config c = config();
    double bpw = 0;
    for (auto _ : state) {
        const svq::quantized_matrix q = svq::quantize(weights(), side, side, c);
        bpw = q.bits_per_weight();
        benchmark::DoNotOptimize(q.words().data());
    }
    state.SetLabel(svq::to_string(c));
    finish(state, bpw);
}

void BM_quantize_hessian(benchmark::State& state) {
    const svq::matrix_config c = config();
    (void)hessian();  // built outside the timing
    svq::gptq_options opt;
    opt.threads = static_cast<unsigned>(state.range(0));
    opt.refine_passes = static_cast<int>(state.range(1));
    double bpw = 0;
    for (auto _ : state) {
        const svq::quantized_matrix q = svq::quantize(weights(), side, side, {.config = c, .hessian = hessian(), .gptq = opt});
        bpw = q.bits_per_weight();
        benchmark::DoNotOptimize(q.words().data());
    }
    state.SetLabel(svq::to_string(c));
    finish(state, bpw);
}

void BM_quantize_gptq_rtn(benchmark::State& state) {
    (void)hessian();
    svq::gptq_options opt;
    opt.threads = static_cast<unsigned>(state.range(0));
    double bpw = 0;
    for (auto _ : state) {
        const svq::rtn_matrix q = svq::gptq_rtn_quantize(weights(), side, side, hessian(), {3, 32}, opt);
        bpw = q.bits_per_weight();
        benchmark::DoNotOptimize(q.codes().data());
    }
    state.SetLabel("int3 g32");
    finish(state, bpw);
}

}  // namespace

BENCHMARK(BM_quantize_plain)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();
// Args: threads, refine passes (gptq_options::refine_passes; 0 = the blocked search alone).
BENCHMARK(BM_quantize_hessian)->ArgNames({"threads", "refine"})->Args({1, 0})->Args({1, 2})->Args({2, 2})->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK(BM_quantize_gptq_rtn)->Arg(2)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

int main(int argc, char** argv) { return svq::bench::main(argc, argv); }
