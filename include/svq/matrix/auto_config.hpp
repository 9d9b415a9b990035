// Configuration for a target bits per weight: "compress this matrix to 3.25 bpw
// with the least error".
//
// For every group size N in the candidate list, every gain width and both row
// scale widths, the largest K whose layout (every stored bit, docs/design.md, "Bits per weight")
// stays at or below the target is found by bisection (bpw rises with K). Each
// such candidate is then tried on a sample of the matrix's rows (evenly
// spaced, encoded and decoded exactly as quantize does): its SQNR on the sample
// is the prediction, and the best prediction wins.
#pragma once

#include <svq/error.hpp>
#include <svq/format/layout.hpp>
#include <svq/matrix/metrics.hpp>
#include <svq/matrix/quantized_matrix.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <span>
#include <vector>

namespace svq {

struct auto_config_options {
    std::vector<std::size_t> group_dims = {8, 16, 32, 64, 128};
    unsigned min_gain_bits = 1;
    unsigned max_gain_bits = 8;
    std::vector<unsigned> row_scale_bits = {8, 16};
    // Rows encoded to predict each candidate's SQNR: at least sample_rows, and enough rows
    // for sample_weights weights (all rows of a small matrix), evenly spaced.
    std::size_t sample_rows = 16;
    std::size_t sample_weights = 65536;

    std::size_t sample_count(std::size_t rows, std::size_t cols) const noexcept {
        const std::size_t by_weights = cols > 0 ? (sample_weights + cols - 1) / cols : 1;
        return std::min(rows, std::max<std::size_t>({sample_rows, by_weights, 1}));
    }
    bool rotate = true;
    std::uint64_t seed = matrix_config{}.seed;
    search_options search{};
    // Candidates whose full-group index needs more bits are skipped. 64 keeps
    // the configurations matrix_decoder decodes with its dense one-word path
    // (speed_config_options).
    std::size_t max_index_bits = 1024;
};

// Options of the speed configurations: group sizes 8 / 16 / 32 whose index
// fits one 64-bit word, decoded by matrix_decoder's dense path (several times
// faster than N = 128, at a rate cost of about 0.2-0.7 dB SQNR at equal bpw:
// docs/performance.md, "Speed configurations"). On a 4096-column Gaussian
// matrix: N = 32 K = 21 at 2 bpw, N = 16 K = 22 at 3, N = 16 K = 46 at 4.
inline auto_config_options speed_config_options() {
    auto_config_options o;
    o.group_dims = {8, 16, 32};
    o.max_index_bits = 63;  // V(N, K) - 1 < 2^63: V(N, K) itself fits the word (the tables hold it)
    return o;
}

struct config_candidate {
    matrix_config config;
    double bits_per_weight = 0.0;      // of the whole matrix, every stored bit
    double predicted_sqnr_db = 0.0;    // measured on the sample rows
};

namespace detail {

inline bool pulses_fit(std::size_t rows, std::size_t cols, const matrix_config& c, double target) {
    try {
        return make_layout(rows, cols, c).bits_per_weight() <= target;
    } catch (const overflow_error&) {
        return false;  // index wider than 1024 bits: far beyond any useful target
    }
}

// Largest K with bpw <= target for this (N, gain bits, row scale bits), or nullopt.
inline std::optional<std::size_t> largest_pulses(std::size_t rows, std::size_t cols, matrix_config c, double target) {
    c.pulses = 1;
    if (!pulses_fit(rows, cols, c, target)) return std::nullopt;
    std::size_t lo = 1, hi = 2;
    for (;; hi *= 2) {
        c.pulses = hi;
        if (!pulses_fit(rows, cols, c, target)) break;
        lo = hi;
        if (hi >= (std::size_t{1} << 20)) return lo;
    }
    while (hi - lo > 1) {  // fits(lo), !fits(hi)
        c.pulses = lo + (hi - lo) / 2;
        (pulses_fit(rows, cols, c, target) ? lo : hi) = c.pulses;
    }
    return lo;
}

// The row scale widths of `widths` that store every row of w (rows x cols):
// 8-bit log codes reach 2^-14.9 of the reference scale (the largest row
// RMS), fp16 2^-22 (row_scale_codec); below its range a row's scale would be
// clamped or rounded to zero, which the encoder refuses, so such a width is
// left out. Rows are judged by their RMS with an octave of margin (the row
// scale the encoder fits is the RMS of the group gains, somewhat below the
// row's RMS). Throws svq::overflow_error when a row is below every width.
inline std::vector<unsigned> usable_row_scale_bits(std::span<const float> w, std::size_t rows, std::size_t cols,
                                                   const std::vector<unsigned>& widths, const char* who) {
    const std::vector<double> rms = row_rms(w, rows, cols);
    const double ref = *std::max_element(rms.begin(), rms.end());
    if (!(ref > 0.0)) return widths;
    std::size_t smallest_row = 0;
    double smallest = std::numeric_limits<double>::infinity();
    for (std::size_t r = 0; r < rows; ++r) {
        if (rms[r] > 0.0 && rms[r] / ref < smallest) {
            smallest = rms[r] / ref;
            smallest_row = r;
        }
    }
    std::vector<unsigned> out;
    for (const unsigned bits : widths)
        if (smallest >= 2.0 * row_scale_codec::smallest_relative(bits)) out.push_back(bits);
    if (out.empty() && !widths.empty())
        throw overflow_error(fmt::format(
            "{}: row {} has an RMS {:.4g} times the largest row RMS, too small for every row scale width tried ({} "
            "bits; 8-bit row scales reach {:.4g} of the reference, 16-bit {:.4g}); scale the row up or quantize it "
            "apart from the larger rows",
            who, smallest_row, smallest, fmt::join(widths, ", "), row_scale_codec::smallest_relative(8),
            row_scale_codec::smallest_relative(16)));
    return out;
}

inline void check_target(double target) {
    if (!std::isfinite(target) || !(target > 0.0))
        throw invalid_argument(fmt::format("target bits per weight {} must be finite and > 0", target));
}

}  // namespace detail

// Every candidate configuration at <= target bpw (the largest K for each N,
// gain width and row scale width), without predictions. Empty when none fits.
inline std::vector<config_candidate> candidate_configs(std::size_t rows, std::size_t cols, double target_bpw,
                                                       const auto_config_options& opt = {}) {
    detail::check_target(target_bpw);
    std::vector<config_candidate> out;
    for (const std::size_t n : opt.group_dims) {
        if (n == 0 || n >= cols) continue;
        for (unsigned gb = opt.min_gain_bits; gb <= opt.max_gain_bits; ++gb) {
            for (const unsigned sb : opt.row_scale_bits) {
                matrix_config c;
                c.group_dim = n;
                c.gain_bits = gb;
                c.row_scale_bits = sb;
                c.rotate = opt.rotate;
                c.seed = opt.seed;
                c.search = opt.search;
                auto k = detail::largest_pulses(rows, cols, c, target_bpw);
                if (!k) continue;
                if (pvq_index_bits(n, *k) > opt.max_index_bits) {  // largest K whose index fits (bits rise with K)
                    if (pvq_index_bits(n, 1) > opt.max_index_bits) continue;
                    std::size_t lo = 1, hi = *k;  // fits(lo), !fits(hi)
                    while (hi - lo > 1) {
                        const std::size_t mid = lo + (hi - lo) / 2;
                        (pvq_index_bits(n, mid) <= opt.max_index_bits ? lo : hi) = mid;
                    }
                    *k = lo;
                }
                c.pulses = *k;
                out.push_back({c, make_layout(rows, cols, c).bits_per_weight(), 0.0});
            }
        }
    }
    return out;
}

// The candidate with the best SQNR on the sample rows. Row scale widths that
// cannot store some row of w (detail::usable_row_scale_bits) are not tried.
// Throws svq::invalid_argument when no configuration reaches the target
// (naming the target and the smallest bpw possible) or for a bad matrix, and
// svq::overflow_error when a row is too small for every row scale width.
inline config_candidate choose_config(std::span<const float> w, std::size_t rows, std::size_t cols, double target_bpw,
                                      const auto_config_options& options = {}) {
    detail::check_matrix(w, rows, cols, "choose_config");
    auto_config_options opt = options;
    opt.row_scale_bits = detail::usable_row_scale_bits(w, rows, cols, options.row_scale_bits, "choose_config");
    std::vector<config_candidate> candidates = candidate_configs(rows, cols, target_bpw, opt);
    if (candidates.empty()) {
        double smallest = std::numeric_limits<double>::infinity();
        for (const std::size_t n : opt.group_dims) {
            if (n == 0 || n >= cols) continue;
            matrix_config c;
            c.group_dim = n;
            c.pulses = 1;
            c.gain_bits = 1;
            c.row_scale_bits = 8;
            c.rotate = opt.rotate;
            smallest = std::min(smallest, make_layout(rows, cols, c).bits_per_weight());
        }
        if (!std::isfinite(smallest))
            throw invalid_argument(fmt::format(
                "no PVQ configuration fits a {} x {} matrix: every group size tried ({}) is >= its {} columns, and a "
                "group must be narrower than the row (give auto_config_options::group_dims a size below {}, an "
                "explicit configuration, or use RTN)",
                rows, cols, fmt::join(opt.group_dims, ", "), cols, cols));
        throw invalid_argument(fmt::format(
            "no PVQ configuration of a {} x {} matrix reaches {} bits per weight (the smallest is {:.4f})", rows,
            cols, target_bpw, smallest));
    }
    const std::size_t sample = opt.sample_count(rows, cols);
    std::vector<float> x(sample * cols);
    for (std::size_t i = 0; i < sample; ++i) {
        const std::size_t r = i * rows / sample;
        std::copy_n(w.data() + r * cols, cols, x.data() + i * cols);
    }
    bool any_signal = false;
    for (const float v : x) any_signal = any_signal || v != 0.0f;
    const auto predict = [&](config_candidate& c) {
        if (!any_signal) return c.predicted_sqnr_db = std::numeric_limits<double>::infinity();
        const std::vector<float> y = quantize(x, sample, cols, c.config).dequantize();
        return c.predicted_sqnr_db = sqnr_db(x, y);
    };
    // candidates come grouped by N, then gain bits ascending, then row scale bits. Within one
    // (N, row scale bits) the SQNR rises with the gain bits until the pulses they take cost more
    // than they give; the scan of that series stops two steps past its peak. An 8-bit row scale
    // with the same K as the 16-bit one is skipped (same rate, coarser scale).
    config_candidate best = candidates.front();
    best.predicted_sqnr_db = -std::numeric_limits<double>::infinity();
    struct series {
        std::size_t n = 0;
        unsigned scale_bits = 0;
        double peak = -std::numeric_limits<double>::infinity();
        int past_peak = 0;
    };
    std::vector<series> seen;
    for (std::size_t i = 0; i < candidates.size(); ++i) {
        config_candidate& c = candidates[i];
        if (c.config.row_scale_bits == 8 && i + 1 < candidates.size() &&
            candidates[i + 1].config.group_dim == c.config.group_dim &&
            candidates[i + 1].config.gain_bits == c.config.gain_bits &&
            candidates[i + 1].config.pulses == c.config.pulses)
            continue;
        auto it = std::find_if(seen.begin(), seen.end(), [&](const series& s) {
            return s.n == c.config.group_dim && s.scale_bits == c.config.row_scale_bits;
        });
        if (it == seen.end()) it = seen.insert(seen.end(), series{c.config.group_dim, c.config.row_scale_bits});
        if (it->past_peak >= 2) continue;
        const double sqnr = predict(c);
        if (sqnr > it->peak) {
            it->peak = sqnr;
            it->past_peak = 0;
        } else {
            ++it->past_peak;
        }
        if (sqnr > best.predicted_sqnr_db) best = c;
    }
    return best;
}

}  // namespace svq
