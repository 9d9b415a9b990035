// Round trip of a small matrix through the PVQ shape codec (N = 32, K = 50):
// every row is cut into groups of 32 weights, each group becomes (index, gain)
// with a 96-bit split-order index (svq::pvq_vector_codec) and a float gain,
// and is decoded back. Prints per-row
// SQNR and relative error, the index bits, and the totals. Runs on a
// fixed-seed Gaussian matrix and, when SVQ_DATA_DIR/stories260K.bin exists,
// on a few rows of a real trained weight matrix.
//
//   ./build/examples/pvq_roundtrip
#include <svq/core/wide_uint.hpp>
#include <svq/error.hpp>
#include <svq/format/split_lattice.hpp>
#include <svq/pvq/codec.hpp>
#include <svq/simd/compat.hpp>

#include "common/args.hpp"
#include "common/llama2.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace {

constexpr std::size_t group_dim = 32;
constexpr std::size_t group_pulses = 50;
using codec_type = svq::pvq_vector_codec<svq::wide_uint<128>>;  // V(32, 50) needs 96 bits

struct totals {
    double signal = 0.0;
    double error = 0.0;
    std::size_t index_bits = 0;
    std::size_t gain_bits = 0;
    std::size_t weights = 0;
};

double to_db(double signal, double error) { return error > 0.0 ? 10.0 * std::log10(signal / error) : INFINITY; }

// w: rows * cols floats, row-major; cols a multiple of group_dim. Prints one line per row.
totals round_trip(const codec_type& codec, std::string_view name, std::span<const float> w, std::size_t rows,
                  std::size_t cols) {
    fmt::print("\n{}: {} x {}, groups of N={} with K={} pulses\n", name, rows, cols, codec.dim(), codec.pulses());
    fmt::print("{:>4} {:>10} {:>10} {:>11} {:>10}\n", "row", "SQNR dB", "rel.error", "index bits", "bits/w");
    totals all;
    const std::size_t groups = cols / codec.dim();
    std::vector<codec_type::code_type> codes(groups);
    std::vector<float> decoded(cols);
    for (std::size_t r = 0; r < rows; ++r) {
        const auto row = w.subspan(r * cols, cols);
        svq::encode_many(codec, row, codes);
        svq::decode_many(codec, codes, decoded);
        double signal = 0.0, error = 0.0;
        for (std::size_t c = 0; c < cols; ++c) {
            const double d = static_cast<double>(row[c]) - decoded[c];
            signal += static_cast<double>(row[c]) * row[c];
            error += d * d;
        }
        const std::size_t index_bits = groups * codec.index_bits();
        fmt::print("{:>4} {:>10.2f} {:>10.4f} {:>11} {:>10.3f}\n", r, to_db(signal, error), std::sqrt(error / signal),
                   index_bits, static_cast<double>(index_bits) / static_cast<double>(cols));
        all.signal += signal;
        all.error += error;
        all.index_bits += index_bits;
        all.gain_bits += groups * 32;  // the gain stays a float here; the scale quantizer codes it later
        all.weights += cols;
    }
    fmt::print(
        "total: SQNR {:.2f} dB, relative error {:.4f}, index bits {} ({:.3f} bits/weight), "
        "+ float gains {} bits ({:.3f} bits/weight)\n",
        to_db(all.signal, all.error), std::sqrt(all.error / all.signal), all.index_bits,
        static_cast<double>(all.index_bits) / static_cast<double>(all.weights), all.gain_bits,
        static_cast<double>(all.gain_bits) / static_cast<double>(all.weights));
    return all;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        svq::examples::arg_parser("pvq_roundtrip",
                                  "A small Gaussian matrix and a few rows of stories260K's layers.0.wq (when\n"
                                  "SVQ_DATA_DIR has it) through the PVQ shape codec, N = 32, K = 50; no options.")
            .parse(argc, argv);
        const codec_type codec(group_dim, group_pulses);
        fmt::print(
            "svq PVQ round trip: N={}, K={}, V(N,K) = {} points, {} index bits per group ({:.3f} bits/weight); "
            "SIMD: {}\n",
            codec.dim(), codec.pulses(), svq::to_decimal(codec.lattice().size()), codec.index_bits(),
            static_cast<double>(codec.index_bits()) / static_cast<double>(codec.dim()), svq::simd::arch_name());

        // 1. A fixed-seed iid N(0, 1) matrix, 16 x 128.
        const std::size_t rows = 16, cols = 128;
        std::mt19937_64 rng(20240611);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        std::vector<float> gaussian(rows * cols);
        for (auto& v : gaussian) v = normal(rng);
        const totals g = round_trip(codec, "Gaussian N(0,1)", gaussian, rows, cols);

        // 2. Real weights: the first 8 rows of layer 0's wq in stories260K (64 inputs = 2 groups per row).
        const std::filesystem::path checkpoint = std::filesystem::path(SVQ_DATA_DIR) / "stories260K.bin";
        if (std::filesystem::exists(checkpoint)) {
            const auto model = svq::llama2::model::load(checkpoint);
            const auto wq = model.linear(0, svq::llama2::linear_kind::wq);
            const auto wq_cols = static_cast<std::size_t>(wq.cols);
            const std::size_t wq_rows = std::min<std::size_t>(8, static_cast<std::size_t>(wq.rows));
            round_trip(codec, "stories260K layers.0.wq (first 8 rows)", wq.weights.subspan(0, wq_rows * wq_cols),
                       wq_rows, wq_cols);
        } else {
            fmt::print("\nreal weights skipped: {} not found\n", checkpoint.string());
        }
        // A sanity bound for the demo itself: the design's prototype reached 16.7 dB on Gaussian data.
        if (!(to_db(g.signal, g.error) > 14.0)) {
            fmt::print(stderr, "unexpectedly low SQNR {:.2f} dB on Gaussian data\n", to_db(g.signal, g.error));
            return 1;
        }
        return 0;
    } catch (const svq::error& e) {
        fmt::print(stderr, "svq error: {}\n", e.what());
        return 1;
    }
}
