// The program both packaging consumers build (find_package/ against an
// installed svq, fetchcontent/ against the source tree) and ctest runs: it
// includes the whole public surface through the umbrella header, as a user
// would, and checks that the headers, include directory, C++20 requirement
// and dependency targets (fmt is a compiled library, so linking too) work;
// svq::io (nlohmann-json, xxHash) writes and maps back a quantized file.
// SVQ_CONSUMER names the consumer.
#include <svq/io/quantized_file.hpp>
#include <svq/svq.hpp>

#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

static_assert(__cplusplus >= 202002L, "svq::svq must give its users C++20 (cxx_std_20)");

int main() {
    std::string message;
    try {
        throw svq::invalid_argument(fmt::format("group size {} must be positive", 0));
    } catch (const svq::error& e) {
        message = e.what();
    }
    if (message != "group size 0 must be positive") {
        std::fprintf(stderr, "unexpected svq::error message: '%s'\n", message.c_str());
        return 1;
    }
    // A small matrix through the codec and back (rotation: Eigen; search and decode: xsimd).
    const std::size_t rows = 8, cols = 256;
    svq::detail::normal_sampler normal(1);
    std::vector<float> w(rows * cols);
    for (float& v : w) v = static_cast<float>(normal.next());
    const svq::quantized_matrix q = svq::quantize(w, rows, cols, {.target_bpw = 3.0});
    const double sqnr = svq::sqnr_db(w, q.dequantize());
    if (!(sqnr > 12.0)) {
        std::fprintf(stderr, "3 bpw round trip gave %.2f dB\n", sqnr);
        return 1;
    }
    const std::filesystem::path file = std::filesystem::temp_directory_path() / ("svq_consumer_" + std::string(SVQ_CONSUMER) + ".safetensors");
    svq::save(file, "w", q);
    const bool same = svq::load(file).pvq("w").dequantize() == q.dequantize();
    std::filesystem::remove(file);
    if (!same) {
        std::fprintf(stderr, "the file round trip changed the matrix\n");
        return 1;
    }
    const std::string arch(svq::simd::arch_name());
    std::printf("svq %s consumer: ok (simd arch %s, 3 bpw round trip %.2f dB)\n", SVQ_CONSUMER, arch.c_str(), sqnr);
    return 0;
}
