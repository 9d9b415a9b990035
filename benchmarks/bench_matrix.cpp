// svq_bench_matrix: quantize and dequantize a 4096 x 4096 iid Gaussian matrix
// at about 2, 3 and 4 bpw (configurations chosen by choose_config before the
// timing), one thread, next to two baselines measured in the same run:
// a memcpy of the dequantized output (64 MiB of floats) and the scalar
// round-to-nearest int-b group quantizer (groups of 32, fp16 scales).
// items_per_second = weights per second. The xsimd architecture is in the
// context block ("xsimd_arch").
#include <common/synthetic.hpp>

#include <svq/matrix/auto_config.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/matrix/rtn.hpp>
#include <svq/simd/compat.hpp>

#include "bench_main.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

constexpr std::size_t side = 4096;

const std::vector<float>& matrix() {
    static const std::vector<float> w = svq::examples::gaussian_matrix(side, side, 1);
    return w;
}

const svq::matrix_config& config_for(int bpw) {
    static std::map<int, svq::matrix_config> cache;
    auto it = cache.find(bpw);
    if (it == cache.end())
        it = cache.emplace(bpw, svq::choose_config(matrix(), side, side, static_cast<double>(bpw)).config).first;
    return it->second;
}

const svq::quantized_matrix& packed_for(int bpw) {
    static std::map<int, svq::quantized_matrix> cache;
    auto it = cache.find(bpw);
    if (it == cache.end()) it = cache.emplace(bpw, svq::quantize(matrix(), side, side, config_for(bpw))).first;
    return it->second;
}

void set_counters(benchmark::State& state, const svq::quantized_matrix& q) {
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(side * side));
    state.counters["bpw"] = q.bits_per_weight();
    state.SetLabel(svq::to_string(q.config()));
}

void bm_quantize(benchmark::State& state) {
    const int bpw = static_cast<int>(state.range(0));
    const svq::matrix_config& c = config_for(bpw);
    for (auto _ : state) {
        svq::quantized_matrix q = svq::quantize(matrix(), side, side, c);
        benchmark::DoNotOptimize(q.words().data());
    }
    set_counters(state, packed_for(bpw));
}

void bm_dequantize(benchmark::State& state) {
    const svq::quantized_matrix& q = packed_for(static_cast<int>(state.range(0)));
    std::vector<float> out(side * side);
    for (auto _ : state) {
        q.dequantize(out);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, q);
}

void bm_memcpy_output(benchmark::State& state) {
    std::vector<float> out(side * side);
    for (auto _ : state) {
        std::memcpy(out.data(), matrix().data(), side * side * sizeof(float));
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(side * side));
}

void bm_rtn_quantize(benchmark::State& state) {
    const auto bits = static_cast<unsigned>(state.range(0));
    for (auto _ : state) {
        svq::rtn_matrix q = svq::rtn_quantize(matrix(), side, side, {bits, 32});
        benchmark::DoNotOptimize(q.codes().data());
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(side * side));
}

void bm_rtn_dequantize(benchmark::State& state) {
    const svq::rtn_matrix q = svq::rtn_quantize(matrix(), side, side, {static_cast<unsigned>(state.range(0)), 32});
    for (auto _ : state) {
        std::vector<float> out = q.dequantize();
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(side * side));
}

}  // namespace

BENCHMARK(bm_memcpy_output)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_rtn_quantize)->Arg(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_rtn_dequantize)->Arg(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_quantize)->Arg(2)->Arg(3)->Arg(4)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_dequantize)->Arg(2)->Arg(3)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
    return svq::bench::main(argc, argv, {{"matrix", fmt::format("{} x {} iid N(0,1), one thread", side, side)}});
}
