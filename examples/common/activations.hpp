// Synthetic calibration activations with the structure of real LLM layer
// inputs: a few strong latent directions with a decaying spectrum (channels
// are correlated), isotropic noise, and a handful of outlier channels whose
// scale is far above the rest. Fixed seeds through svq's portable generator.
#pragma once

#include <svq/rotate/seeded_random.hpp>

#include <svq/core/eigen.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace svq::examples {

struct activation_shape {
    std::size_t factors = 32;       // latent directions; factor k has scale (k + 1)^-decay
    double decay = 0.75;
    double noise = 0.05;            // iid N(0, noise^2) on every channel
    std::size_t outliers = 4;       // channels scaled by outlier_scale
    double outlier_scale = 20.0;
};

// tokens x dim floats, row-major (one token per row).
inline std::vector<float> correlated_activations(std::size_t tokens, std::size_t dim, std::uint64_t seed,
                                                 const activation_shape& shape = {}) {
    detail::normal_sampler normal(seed);
    const auto t = static_cast<Eigen::Index>(tokens), d = static_cast<Eigen::Index>(dim),
               f = static_cast<Eigen::Index>(shape.factors);
    Eigen::MatrixXf directions(f, d);  // row k: a random direction times its scale
    for (Eigen::Index k = 0; k < f; ++k) {
        const double scale = std::pow(static_cast<double>(k + 1), -shape.decay) / std::sqrt(static_cast<double>(dim));
        for (Eigen::Index j = 0; j < d; ++j) directions(k, j) = static_cast<float>(normal.next() * scale * 4.0);
    }
    Eigen::MatrixXf latent(t, f);
    for (Eigen::Index i = 0; i < t; ++i)
        for (Eigen::Index k = 0; k < f; ++k) latent(i, k) = static_cast<float>(normal.next());
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> x = latent * directions;
    for (Eigen::Index i = 0; i < t; ++i)
        for (Eigen::Index j = 0; j < d; ++j) x(i, j) += static_cast<float>(normal.next() * shape.noise);
    // Outlier channels spread over the width (deterministic, not a random draw, so every size has them).
    for (std::size_t o = 0; o < shape.outliers && o < dim; ++o) {
        const auto j = static_cast<Eigen::Index>((o * 2 + 1) * dim / (2 * shape.outliers));
        x.col(j) *= static_cast<float>(shape.outlier_scale);
    }
    return std::vector<float>(x.data(), x.data() + x.size());
}

}  // namespace svq::examples
