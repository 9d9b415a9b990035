// Calibration: the Hessian H = X^T X / n of a linear layer's proxy loss
// tr(dW H dW^T) from its calibration inputs X (n tokens x dim channels).
//
// Activations arrive in float batches of any size; X^T X is accumulated in
// double (Eigen's symmetric rank update on the lower triangle), so the order
// of batches changes H only by double rounding. Damping adds
// lambda * mean(diag H) to the diagonal (GPTQ's default lambda = 0.01), which
// makes H positive definite whenever some channel is active; a Hessian that
// Eigen's LLT still rejects after damping is an error (svq::invalid_argument),
// not a silent fallback. docs/hessian.md has the mathematics.
#pragma once

#include <svq/core/checks.hpp>
#include <svq/error.hpp>

#include <svq/core/eigen.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

namespace svq {

namespace detail {

using row_major_matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

inline void check_hessian_shape(std::span<const double> h, std::size_t dim, const char* who) {
    if (dim == 0) throw invalid_argument(fmt::format("{}: Hessian dimension 0", who));
    if (h.size() != dim * dim)
        throw invalid_argument(
            fmt::format("{}: Hessian has {} values, a {} x {} Hessian needs {}", who, h.size(), dim, dim, dim * dim));
    for (std::size_t i = 0; i < h.size(); ++i)
        if (!std::isfinite(h[i]))
            throw invalid_argument(fmt::format("{}: H({}, {}) = {} is not finite", who, i / dim, i % dim, h[i]));
}

}  // namespace detail

// h (dim x dim row-major) <- h + damping * mean(diag h) * I. Throws
// svq::invalid_argument for a negative or non-finite damping, a bad shape or
// a non-finite entry.
inline void damp_hessian(std::span<double> h, std::size_t dim, double damping = 0.01) {
    if (!std::isfinite(damping) || damping < 0.0)
        throw invalid_argument(fmt::format("damp_hessian: damping {} must be finite and >= 0", damping));
    detail::check_hessian_shape(h, dim, "damp_hessian");
    double trace = 0.0;
    for (std::size_t i = 0; i < dim; ++i) trace += h[i * dim + i];
    const double add = damping * trace / static_cast<double>(dim);
    for (std::size_t i = 0; i < dim; ++i) h[i * dim + i] += add;
}

// Throws svq::invalid_argument when Eigen's LLT of h (dim x dim, row-major,
// lower triangle read) fails, i.e. h is not numerically positive definite.
inline void check_positive_definite(std::span<const double> h, std::size_t dim, const char* who = "hessian") {
    detail::check_hessian_shape(h, dim, who);
    const Eigen::Map<const detail::row_major_matrix> m(h.data(), static_cast<Eigen::Index>(dim),
                                                       static_cast<Eigen::Index>(dim));
    const Eigen::LLT<Eigen::MatrixXd> llt(m);
    if (llt.info() != Eigen::Success) {
        double smallest = m(0, 0);
        for (std::size_t i = 1; i < dim; ++i) smallest = std::min(smallest, m(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(i)));
        throw invalid_argument(fmt::format(
            "{}: the {} x {} Hessian is not positive definite (Cholesky failed; smallest diagonal entry {}); "
            "damp it more or calibrate with more tokens",
            who, dim, dim, smallest));
    }
}

// Streaming H = X^T X / n. dim is the layer's input width (its column count).
class hessian_accumulator {
public:
    // Throws svq::invalid_argument for dim == 0.
    explicit hessian_accumulator(std::size_t dim) : dim_(dim) {
        if (dim == 0) throw invalid_argument("hessian_accumulator: dim = 0 must be >= 1");
        const auto n = static_cast<Eigen::Index>(dim);
        sum_ = Eigen::MatrixXd::Zero(n, n);
    }

    std::size_t dim() const noexcept { return dim_; }
    std::size_t samples() const noexcept { return samples_; }

    // x: tokens * dim floats, row-major (one token's input per row). Any
    // number of batches, tokens == 0 included. Throws svq::invalid_argument
    // when x.size() != tokens * dim, or for a non-finite value (naming the
    // token of the batch, the channel and the value); nothing is added then.
    void add(std::span<const float> x, std::size_t tokens) {
        if (x.size() != tokens * dim_)
            throw invalid_argument(fmt::format("hessian_accumulator::add: {} values for {} tokens of dim {} (need {})",
                                               x.size(), tokens, dim_, tokens * dim_));
        for (std::size_t i = 0; i < x.size(); ++i)
            if (!std::isfinite(x[i]))
                throw invalid_argument(fmt::format("hessian_accumulator::add: token {} channel {} = {} is not finite",
                                                   i / dim_, i % dim_, x[i]));
        if (tokens == 0) return;
        // dim x tokens in double: columns are tokens, so the update is batch * batch^T.
        const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>> batch(
            x.data(), static_cast<Eigen::Index>(dim_), static_cast<Eigen::Index>(tokens));
        const Eigen::MatrixXd batch_d = batch.cast<double>();
        sum_.selfadjointView<Eigen::Lower>().rankUpdate(batch_d);
        samples_ += tokens;
    }
    // One token's input (dim floats).
    void add(std::span<const float> x) { add(x, 1); }

    // H = X^T X / n, dim x dim row-major. Throws svq::invalid_argument before any sample.
    std::vector<double> hessian() const {
        if (samples_ == 0) throw invalid_argument(fmt::format("hessian_accumulator: no samples yet (dim {})", dim_));
        std::vector<double> h(dim_ * dim_);
        const double inv_n = 1.0 / static_cast<double>(samples_);
        for (std::size_t i = 0; i < dim_; ++i)
            for (std::size_t j = 0; j <= i; ++j) {
                const double v = sum_(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) * inv_n;
                h[i * dim_ + j] = v;
                h[j * dim_ + i] = v;
            }
        return h;
    }

    // H + damping * mean(diag H) * I, checked positive definite (svq::invalid_argument otherwise).
    std::vector<double> damped_hessian(double damping = 0.01) const {
        std::vector<double> h = hessian();
        damp_hessian(h, dim_, damping);
        check_positive_definite(h, dim_, "hessian_accumulator");
        return h;
    }

private:
    std::size_t dim_;
    std::size_t samples_ = 0;
    Eigen::MatrixXd sum_;  // X^T X, lower triangle valid
};

// The proxy loss tr(dW H dW^T) of a reconstruction wq of w (both rows x cols,
// row-major), H cols x cols row-major: the layer's mean squared output error
// over the calibration tokens when H = X^T X / n.
inline double proxy_loss(std::span<const float> w, std::span<const float> wq, std::size_t rows, std::size_t cols,
                         std::span<const double> h) {
    const std::size_t n = detail::checked_size(rows, cols, "proxy_loss");
    if (w.size() != n || wq.size() != n)
        throw invalid_argument(fmt::format("proxy_loss: sizes {} and {} for a {} x {} matrix", w.size(), wq.size(),
                                           rows, cols));
    detail::check_hessian_shape(h, cols, "proxy_loss");
    const auto r = static_cast<Eigen::Index>(rows), c = static_cast<Eigen::Index>(cols);
    const detail::row_major_matrix d =
        Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(w.data(), r, c)
            .cast<double>() -
        Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(wq.data(), r, c)
            .cast<double>();
    const Eigen::Map<const detail::row_major_matrix> hm(h.data(), c, c);
    return (d * hm).cwiseProduct(d).sum();
}

}  // namespace svq
