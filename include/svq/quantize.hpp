// svq::quantize: one entry point for a weight matrix, one options struct.
//
//   svq::quantize(w, rows, cols, {.target_bpw = 3.25});                    // configuration chosen, plain search
//   svq::quantize(w, rows, cols, {.config = c, .threads = 0});             // explicit configuration, all cores
//   svq::quantize(w, rows, cols, {.target_bpw = 2.0, .hessian = h});       // Hessian-weighted (GPTQ-style) search
//
// The result is a quantized_matrix (format version 3, format/row_format.hpp),
// decoded by quantized_matrix::dequantize or matrix_decoder (kernels/gemv.hpp).
// Other row formats and searches compose through quantize_with
// (matrix/quantized_matrix.hpp).
#pragma once

#include <svq/error.hpp>
#include <svq/hessian/gptq.hpp>
#include <svq/matrix/auto_config.hpp>
#include <svq/matrix/quantized_matrix.hpp>

#include <fmt/format.h>

#include <cmath>
#include <cstddef>
#include <functional>
#include <optional>
#include <span>

namespace svq {

struct quantize_options {
    // An explicit configuration, or (exactly one of the two)
    std::optional<matrix_config> config{};
    // the configuration choose_config picks at <= this many bits per weight
    // (with a Hessian: the one whose Hessian search has the least proxy loss on sample rows).
    double target_bpw = 0.0;
    // cols x cols row-major, symmetric positive definite: the Hessian-weighted
    // search minimising tr(dW H dW^T) (hessian_search); empty: the plain MSE search.
    std::span<const double> hessian{};
    // What choose_config tries (target_bpw only).
    auto_config_options choice{};
    // The Hessian search's options.
    gptq_options gptq{};
    // Rows are split over this many threads (0: all cores); the result does
    // not depend on it. (The Hessian search keeps gptq.threads when this is 1.)
    unsigned threads = 1;
    // Called with (rows done, rows) as the plain search goes (on the calling thread).
    std::function<void(std::size_t, std::size_t)> progress{};
};

// Throws svq::invalid_argument for an empty or ragged shape, a non-finite
// weight (naming its row, column and value), a bad configuration, both or
// neither of config and target_bpw, a target no configuration reaches, or a
// bad Hessian; svq::overflow_error when the index of (N, K) needs more than
// 1024 bits.
inline quantized_matrix quantize(std::span<const float> w, std::size_t rows, std::size_t cols,
                                 const quantize_options& options) {
    if (options.config.has_value() == (options.target_bpw != 0.0))
        throw invalid_argument(fmt::format(
            "quantize: give exactly one of an explicit configuration and a target bits per weight (config {}, "
            "target_bpw {})",
            options.config ? to_string(*options.config) : std::string("none"), options.target_bpw));
    // The matrix and the Hessian's shape are checked by choose_config (a
    // target) and by quantize_with, not here again.
    const bool hessian = !options.hessian.empty();
    gptq_options gptq = options.gptq;
    if (options.threads != 1) gptq.threads = options.threads;
    const matrix_config config =
        options.config ? *options.config
        : hessian      ? choose_config(w, rows, cols, options.hessian, options.target_bpw, options.choice, gptq).config
                       : choose_config(w, rows, cols, options.target_bpw, options.choice).config;
    if (hessian) return quantize_with(w, rows, cols, config, hessian_search{options.hessian, gptq});
    return quantize_with(w, rows, cols, config, mse_search{options.threads, options.progress});
}

}  // namespace svq
