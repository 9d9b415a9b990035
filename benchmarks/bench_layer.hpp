// The 4096 x 4096 layer the Hessian and CRVQ benchmarks quantize: Student-t(4)
// weights and the damped (0.01) Hessian of 4096 correlated synthetic tokens,
// each built once, outside the timed loops.
#pragma once

#include <common/activations.hpp>
#include <common/synthetic.hpp>

#include <svq/hessian/calibration.hpp>

#include <cstddef>
#include <vector>

namespace svq::bench {

inline constexpr std::size_t layer_side = 4096;

inline const std::vector<float>& layer_weights() {
    static const std::vector<float> w = svq::examples::student_t_matrix(layer_side, layer_side, 4, 7);
    return w;
}

inline const std::vector<double>& layer_hessian() {
    static const std::vector<double> h = [] {
        svq::hessian_accumulator acc(layer_side);
        acc.add(svq::examples::correlated_activations(layer_side, layer_side, 8), layer_side);
        return acc.damped_hessian(0.01);
    }();
    return h;
}

}  // namespace svq::bench
