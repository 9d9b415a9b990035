// Golden output: the SHA-256 of the stored parts that quantize writes for
// fixed inputs, across the configuration families (N = 8..128, 2/3/4 bpw,
// rotated or not, a tail group, the automatic choice, the Hessian search,
// requantize, CRVQ with both bases). A refactoring must leave every digest
// unchanged; a change of format changes them on purpose and raises
// svq::format_version.
//
// The encoder's searches run in floating point through SIMD kernels whose
// width is the build's architecture, so the digests are recorded per xsimd
// architecture. On an architecture without a recorded table the test still
// checks that two runs agree, and prints the digests (SVQ_GOLDEN_PRINT=1
// prints them anywhere) so that they can be recorded.
#include <svq/svq.hpp>

#include "catch.hpp"
#include "common/activations.hpp"
#include "common/synthetic.hpp"
#include "sha256.hpp"
#include "support.hpp"

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using svq::test::explicit_config;
using svq::test::sha256;

std::string digest_of(const svq::quantized_matrix& q) {
    sha256 h;
    h.update(q.words());
    h.value(q.reference_scale());
    return h.hex();
}

// The stored parts in one order for both bases: the base codebook (k-means
// base), the extended codebooks, then per matrix its scales, permutation,
// base codes (k-means base; empty for PVQ), extended codes and the PVQ
// matrix (PVQ base).
template <class B>
std::string digest_of(const svq::crvq_model<B>& m) {
    constexpr bool pvq = std::is_same_v<B, svq::pvq_base>;
    sha256 h;
    const svq::crvq_codebooks<B>& books = *m.codebooks;
    auto add_book = [&](const svq::kmeans_codebook& c) {
        for (std::size_t e = 0; e < c.entries(); ++e) h.update(std::span<const float>(c.entry(e), c.dim()));
    };
    if constexpr (!pvq) {
        if (books.base) add_book(*books.base);
    }
    for (const svq::kmeans_codebook& c : books.extended) add_book(c);
    for (const svq::crvq_matrix<B>& q : m.matrices) {
        h.value(q.reference_scale());
        h.update(q.row_scale_codes());
        h.update(q.permutation());
        if constexpr (pvq) h.update(std::span<const std::uint32_t>());
        else h.update(std::span<const std::uint32_t>(q.base_part()));
        h.update(q.extended_codes());
        if constexpr (pvq) {
            h.update(q.base_part().words());
            h.value(q.base_part().reference_scale());
        }
    }
    return h.hex();
}

struct golden_case {
    std::string name;
    std::function<std::string()> digest;
};

std::vector<golden_case> golden_cases() {
    constexpr std::size_t rows = 48, cols = 256;
    static const std::vector<float> gauss = svq::examples::gaussian_matrix(rows, cols, 11);
    static const std::vector<float> heavy = svq::examples::student_t_matrix(rows, cols, 4, 12);
    static const std::vector<float> tail = svq::examples::gaussian_matrix(rows, 200, 13);
    static const std::vector<double> h = [] {
        svq::hessian_accumulator acc(cols);
        acc.add(svq::examples::correlated_activations(1024, cols, 14), 1024);
        return acc.damped_hessian(0.01);
    }();
    auto plain = [](const std::vector<float>& w, std::size_t c, svq::matrix_config config) {
        return [&w, c, config] { return digest_of(svq::quantize(w, w.size() / c, c, config)); };
    };
    std::vector<golden_case> cases = {
        {"N8_K6_g3_s16_rot", plain(gauss, cols, explicit_config(8, 6, 3, 16, true))},
        {"N8_K12_g4_s8_norot", plain(heavy, cols, explicit_config(8, 12, 4, 8, false))},
        {"N16_K22_g4_s8_rot", plain(gauss, cols, explicit_config(16, 22, 4, 8, true))},
        {"N16_K46_g5_s16_rot", plain(heavy, cols, explicit_config(16, 46, 5, 16, true))},
        {"N32_K21_g3_s8_rot", plain(gauss, cols, explicit_config(32, 21, 3, 8, true))},
        {"N32_K50_g5_s16_norot", plain(gauss, cols, explicit_config(32, 50, 5, 16, false))},
        {"N64_K140_g5_s8_rot", plain(heavy, cols, explicit_config(64, 140, 5, 8, true))},
        {"N128_K60_g4_s16_norot", plain(gauss, cols, explicit_config(128, 60, 4, 16, false))},
        {"N128_K184_g6_s16_rot", plain(gauss, cols, explicit_config(128, 184, 6, 16, true))},
        {"N32_K50_tail_norot", plain(tail, 200, explicit_config(32, 50, 5, 16, false))},
        {"auto_3.25", [] { return digest_of(svq::quantize(heavy, rows, cols, {.target_bpw = 3.25})); }},
        {"auto_speed_3", [] { return digest_of(svq::quantize(gauss, rows, cols, {.target_bpw = 3.0, .choice = svq::speed_config_options()})); }},
        {"hessian_N16_K22_rot",
         [] { return digest_of(svq::quantize(gauss, rows, cols, {.config = explicit_config(16, 22, 4, 8, true), .hessian = h})); }},
        {"hessian_auto_2", [] { return digest_of(svq::quantize(heavy, rows, cols, {.target_bpw = 2.0, .hessian = h})); }},
        {"requantize_N16",
         [] {
             const svq::quantized_matrix q = svq::quantize(gauss, rows, cols, explicit_config(16, 22, 4, 8, true));
             std::vector<float> moved = gauss;
             for (std::size_t i = 0; i < moved.size(); ++i) moved[i] += 0.1f * heavy[i];
             return digest_of(svq::requantize(q, moved));
         }},
        {"crvq_kmeans",
         [] {
             svq::crvq_config<svq::kmeans_base> c;
             c.base.bits = 6;
             c.extended_bits = 4;
             c.critical_fraction = 0.05;
             c.kmeans.iterations = 8;
             return digest_of(svq::crvq_quantize(gauss, rows, cols, h, c));
         }},
        {"crvq_pvq",
         [] {
             svq::crvq_config<svq::pvq_base> c;
             c.base.target_bpw = 2.0;
             c.extended_bits = 4;
             c.critical_fraction = 0.05;
             return digest_of(svq::crvq_quantize(heavy, rows, cols, h, c));
         }},
    };
    return cases;
}

// Recorded at format version 3 (the commit before the format module) with
// g++ 12 -O3 -march=native.
const std::map<std::string, std::map<std::string, std::string>>& recorded() {
    static const std::map<std::string, std::map<std::string, std::string>> tables = {
#include "golden_digests.inc"
    };
    return tables;
}

}  // namespace

TEST_CASE("quantize writes the recorded words for every configuration family", "[golden]") {
    const std::string arch(svq::simd::arch_name());
    const bool print = std::getenv("SVQ_GOLDEN_PRINT") != nullptr;
    const auto table = recorded().find(arch);
    for (const golden_case& c : golden_cases()) {
        const std::string d = c.digest();
        INFO(c.name << " on " << arch);
        REQUIRE(d == c.digest());  // deterministic within the build
        if (print || table == recorded().end()) std::cout << "    {\"" << c.name << "\", \"" << d << "\"},\n";
        if (table != recorded().end()) {
            const auto want = table->second.find(c.name);
            REQUIRE(want != table->second.end());
            CHECK(d == want->second);
        }
    }
    if (table == recorded().end()) WARN("no golden digests recorded for xsimd arch " << arch << "; printed above");
}
