// The synthetic test matrices of docs/design.md ("Synthetic sets"): iid N(0, 1) and iid Student-t
// with 4 degrees of freedom (heavy tails, like trained weights), from fixed
// seeds through svq's portable generator, so every platform gets the same set.
#pragma once

#include <svq/rotate/seeded_random.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace svq::examples {

inline std::vector<float> gaussian_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed) {
    detail::normal_sampler normal(seed);
    std::vector<float> w(rows * cols);
    for (float& v : w) v = static_cast<float>(normal.next());
    return w;
}

// Student-t(dof) = Z / sqrt(chi2_dof / dof), chi2_dof a sum of dof squared normals (integer dof).
inline std::vector<float> student_t_matrix(std::size_t rows, std::size_t cols, unsigned dof, std::uint64_t seed) {
    detail::normal_sampler normal(seed);
    std::vector<float> w(rows * cols);
    for (float& v : w) {
        const double z = normal.next();
        double chi2 = 0.0;
        for (unsigned i = 0; i < dof; ++i) {
            const double g = normal.next();
            chi2 += g * g;
        }
        v = static_cast<float>(z / std::sqrt(chi2 / dof));
    }
    return w;
}

}  // namespace svq::examples
