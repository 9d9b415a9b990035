// The main() of every svq benchmark binary: records in Google Benchmark's
// context block what a reader needs to compare figures (the xsimd architecture
// and version the kernels were built for, what one item is, and the binary's
// own entries), then runs the registered benchmarks.
#pragma once

#include <svq/simd/compat.hpp>

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <string>
#include <utility>
#include <vector>

namespace svq::bench {

inline int main(int argc, char** argv, const std::vector<std::pair<std::string, std::string>>& context = {}) {
    benchmark::AddCustomContext("xsimd_arch", std::string(svq::simd::arch_name()));
    benchmark::AddCustomContext("xsimd_version",
                                fmt::format("{}.{}.{}", XSIMD_VERSION_MAJOR, XSIMD_VERSION_MINOR, XSIMD_VERSION_PATCH));
    benchmark::AddCustomContext("item", "one weight (items_per_second = weights/s)");
    for (const auto& [key, value] : context) benchmark::AddCustomContext(key, value);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}

}  // namespace svq::bench
