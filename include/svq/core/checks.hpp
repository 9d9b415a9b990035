// Argument checks shared by the quantized matrix types and their encoders,
// and the per-row RMS the encoders start from.
#pragma once

#include <svq/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

namespace svq::detail {

// rows * cols, or svq::overflow_error naming the shape when the product
// does not fit std::size_t (a size check on the wrapped product would pass
// and the reads run past the buffer).
inline std::size_t checked_size(std::size_t rows, std::size_t cols, const char* who) {
    if (cols != 0 && rows > static_cast<std::size_t>(-1) / cols)
        throw overflow_error(fmt::format("{}: a {} x {} matrix has more entries than a size_t holds", who, rows, cols));
    return rows * cols;
}

// The shapes of a product Y = W X with W rows x cols and `batch` vectors.
inline void check_gemv_shapes(std::size_t xs, std::size_t ys, std::size_t batch, std::size_t rows, std::size_t cols,
                              const char* who) {
    if (batch == 0) throw invalid_argument(fmt::format("{}: batch must be >= 1", who));
    if (xs != batch * cols)
        throw invalid_argument(fmt::format("{}: x has {} entries, need {} ({} x {} columns)", who, xs, batch * cols,
                                           batch, cols));
    if (ys != batch * rows)
        throw invalid_argument(
            fmt::format("{}: y has {} entries, need {} ({} x {} rows)", who, ys, batch * rows, batch, rows));
}

// Checks w (rows x cols, every weight finite) and returns its largest magnitude.
inline float check_matrix(std::span<const float> w, std::size_t rows, std::size_t cols, const char* who) {
    if (rows == 0 || cols == 0) throw invalid_argument(fmt::format("{}: matrix shape {} x {} is empty", who, rows, cols));
    if (w.size() != checked_size(rows, cols, who))
        throw invalid_argument(
            fmt::format("{}: {} values for a {} x {} matrix (need {})", who, w.size(), rows, cols, rows * cols));
    float peak = 0.0f;
    for (std::size_t i = 0; i < w.size(); ++i) {
        if (!std::isfinite(w[i]))
            throw invalid_argument(fmt::format("{}: weight ({}, {}) = {} is not finite", who, i / cols, i % cols, w[i]));
        peak = std::max(peak, std::fabs(w[i]));
    }
    return peak;
}

// Per-row RMS of w (rows x cols), in double.
inline std::vector<double> row_rms(std::span<const float> w, std::size_t rows, std::size_t cols) {
    std::vector<double> out(rows);
    for (std::size_t r = 0; r < rows; ++r) {
        double e = 0.0;
        for (std::size_t c = 0; c < cols; ++c) e += static_cast<double>(w[r * cols + c]) * w[r * cols + c];
        out[r] = std::sqrt(e / static_cast<double>(cols));
    }
    return out;
}

}  // namespace svq::detail
