// svq_bench_pvq: throughput of the single-vector PVQ pieces, one thread.
//
// For (N, K) in (8,16), (16,27), (32,50), (64,96), (128,187): rank and
// unrank of the split-order lattice (svq::split_lattice, checked, typed
// index), search (refined, greedy, and the weighted search with its default
// sweep) and decode of svq::pvq_vector_codec (index + gain -> N floats). One item is one weight, so the
// items_per_second column reads as weights/s (Mweights/s after "M").
// Inputs are a fixed-seed pool prepared before timing: iid N(0,1) vectors, their
// searched points, indices and codes; each iteration takes the next pool entry.
// The xsimd architecture is in the context block ("xsimd_arch").
//
//   ./svq_bench_pvq --benchmark_min_time=0.2
#include <svq/core/wide_uint.hpp>
#include <svq/format/split_lattice.hpp>
#include <svq/pvq/codec.hpp>
#include <svq/pvq/count.hpp>
#include <svq/pvq/search.hpp>
#include <svq/simd/compat.hpp>

#include "bench_main.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace {

constexpr std::size_t pool_size = 1024;  // a power of two: the pool cursor wraps with a mask

template <class Index>
struct workload {
    std::size_t dim;
    std::size_t pulses;
    svq::pvq_vector_codec<Index> codec;
    std::vector<float> inputs;                       // pool_size * dim, iid N(0,1)
    std::vector<float> weights;                      // pool_size * dim, log-normal (the weighted search)
    std::vector<int> points;                         // pool_size * dim, the refined search of each input
    std::vector<svq::pvq_code<Index>> codes;         // pool_size

    workload(std::size_t n, std::size_t k) : dim(n), pulses(k), codec(n, k) {
        std::mt19937_64 rng(0x9e3779b97f4a7c15ULL ^ (n * 1000 + k));
        std::normal_distribution<float> normal(0.0f, 1.0f);
        inputs.resize(pool_size * dim);
        weights.resize(pool_size * dim);
        for (auto& v : inputs) v = normal(rng);
        for (auto& v : weights) v = std::exp(0.8f * normal(rng));
        points.resize(pool_size * dim);
        codes.resize(pool_size);
        for (std::size_t i = 0; i < pool_size; ++i)
            codes[i] = codec.encode(input(i), std::span<int>(points).subspan(i * dim, dim));
    }
    std::span<const float> input(std::size_t i) const { return std::span<const float>(inputs).subspan(i * dim, dim); }
    std::span<const float> weight(std::size_t i) const { return std::span<const float>(weights).subspan(i * dim, dim); }
    std::span<const int> point(std::size_t i) const { return std::span<const int>(points).subspan(i * dim, dim); }
};

template <class Index>
void set_items(benchmark::State& state, const workload<Index>& w) {
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(w.dim));
}

template <class Index>
void bm_rank(benchmark::State& state, const workload<Index>* w) {
    const auto& lattice = w->codec.lattice();
    std::size_t i = 0;
    for (auto _ : state) {
        Index index = lattice.rank(w->point(i));
        benchmark::DoNotOptimize(index);
        i = (i + 1) & (pool_size - 1);
    }
    set_items(state, *w);
}

template <class Index>
void bm_unrank(benchmark::State& state, const workload<Index>* w) {
    const auto& lattice = w->codec.lattice();
    std::vector<int> y(w->dim);
    std::size_t i = 0;
    for (auto _ : state) {
        lattice.unrank(w->codes[i].index, y);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
        i = (i + 1) & (pool_size - 1);
    }
    set_items(state, *w);
}

// The public search with caller scratch (validation of x included, no allocation).
template <class Index>
void bm_search(benchmark::State& state, const workload<Index>* w, svq::search_options options, bool weighted) {
    std::vector<int> y(w->dim);
    std::vector<double> scratch(svq::detail::pvq_search_scratch_size(w->dim));
    const int pulses = static_cast<int>(w->pulses);
    std::size_t i = 0;
    for (auto _ : state) {
        if (weighted)
            svq::pvq_search_weighted(w->input(i), w->weight(i), pulses, y, options, scratch);
        else
            svq::pvq_search(w->input(i), pulses, y, options, scratch);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
        i = (i + 1) & (pool_size - 1);
    }
    set_items(state, *w);
}

// Codec decode: gain and index checks, unrank, and g * y / ||y|| into floats.
template <class Index>
void bm_decode(benchmark::State& state, const workload<Index>* w) {
    std::vector<int> y(w->dim);
    std::vector<float> out(w->dim);
    std::size_t i = 0;
    for (auto _ : state) {
        w->codec.decode(w->codes[i], out, y);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
        i = (i + 1) & (pool_size - 1);
    }
    set_items(state, *w);
}

// Registers every benchmark of one (N, K); the workload lives until the process exits.
template <class Index>
void register_size(std::size_t n, std::size_t k, std::vector<std::shared_ptr<void>>& keep) {
    auto w = std::make_shared<workload<Index>>(n, k);
    keep.push_back(w);
    const workload<Index>* p = w.get();
    const std::string tag = fmt::format("N={}/K={}/bits={}", n, k, p->codec.index_bits());
    const svq::search_options refined{};
    const svq::search_options greedy{false, 0};
    benchmark::RegisterBenchmark(("rank/" + tag).c_str(), bm_rank<Index>, p);
    benchmark::RegisterBenchmark(("unrank/" + tag).c_str(), bm_unrank<Index>, p);
    benchmark::RegisterBenchmark(("search_refined/" + tag).c_str(), bm_search<Index>, p, refined, false);
    benchmark::RegisterBenchmark(("search_greedy/" + tag).c_str(), bm_search<Index>, p, greedy, false);
    benchmark::RegisterBenchmark(("search_weighted/" + tag).c_str(), bm_search<Index>, p, refined, true);
    benchmark::RegisterBenchmark(("decode/" + tag).c_str(), bm_decode<Index>, p);
}

}  // namespace

int main(int argc, char** argv) {
    // The cheapest index type that holds each size (pvq_index_bits: 24, 48, 96, 192, 384 bits);
    // the lattice constructor throws svq::overflow_error if one did not fit.
    std::vector<std::shared_ptr<void>> keep;
    register_size<std::uint64_t>(8, 16, keep);
    register_size<std::uint64_t>(16, 27, keep);
    register_size<svq::wide_uint<128>>(32, 50, keep);
    register_size<svq::wide_uint<192>>(64, 96, keep);
    register_size<svq::wide_uint<384>>(128, 187, keep);

    return svq::bench::main(argc, argv);
}
