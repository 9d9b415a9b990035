// The Eigen modules svq uses, included once with GCC 12's false positive
// silenced: Eigen's AVX-512 packet code trips -Wmaybe-uninitialized inside
// GCC 12's own avx512fintrin.h (GCC bug 105593, fixed in GCC 13). The pragmas
// cover Eigen's headers only, so users building svq code with -Werror are not
// stopped by it and svq's own code keeps the warning.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/QR>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
