// Batched products over rows a decoder writes one at a time, shared by the
// PVQ decoder (kernels/gemv.hpp) and the trellis matrix (trellis/trellis.hpp):
// from gemm_batch vectors on, tiles of decoded rows times X by Eigen's GEMM,
// so each weight is decoded once and the products run at GEMM speed.
#pragma once

#include <svq/core/eigen.hpp>
#include <svq/core/parallel.hpp>
#include <svq/kernels/portable.hpp>

#include <algorithm>
#include <cstddef>

namespace svq::detail {

// Vectors from which the decoders multiply tiles of decoded rows with Eigen's
// GEMM (measured crossover on 4096 x 4096: docs/performance.md).
inline constexpr std::size_t gemm_batch = 32;

// Rows per tile: 64, fewer where 64 rows of `cols` floats would pass 4 MB.
inline std::size_t gemm_tile_rows(std::size_t cols) noexcept {
    return std::clamp<std::size_t>((std::size_t{4} << 20) / (4 * std::max<std::size_t>(cols, 1)), 1, 64);
}

// Y = W X for `batch` vectors, W given row by row: decode(state, r, out)
// writes row r (cols floats, in the basis of x) into a tile of
// gemm_tile_rows(cols) rows, which Eigen's GEMM multiplies with X. state =
// init(), one per thread (parallel_chunks over tiles). x: batch * cols
// (vector c at c * cols), y: batch * rows (vector c at c * rows).
template <class Init, class Decode>
void tiled_gemm(std::size_t rows, std::size_t cols, std::size_t batch, unsigned threads, const float* x, float* y,
                Init&& init, Decode&& decode) {
    using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const auto n = static_cast<Eigen::Index>(cols), vectors = static_cast<Eigen::Index>(batch);
    const Eigen::Map<const Eigen::MatrixXf> xm(x, n, vectors);
    const std::size_t per_tile = gemm_tile_rows(cols);
    struct worker {
        decltype(init()) state;
        aligned_floats tile;
    };
    parallel_chunks(
        rows, threads, per_tile, [&] { return worker{init(), aligned_floats(std::min(rows, per_tile) * cols)}; },
        [&](worker& wk, std::size_t first, std::size_t end) {
            for (std::size_t t0 = first; t0 < end; t0 += per_tile) {  // one thread gets all rows at once
                const std::size_t t1 = std::min(end, t0 + per_tile);
                for (std::size_t r = t0; r < t1; ++r) decode(wk.state, r, wk.tile.data() + (r - t0) * cols);
                const auto m = static_cast<Eigen::Index>(t1 - t0);
                Eigen::Map<Eigen::MatrixXf, 0, Eigen::OuterStride<>> ym(y + t0, m, vectors,
                                                                        Eigen::OuterStride<>(static_cast<Eigen::Index>(rows)));
                ym.noalias() = Eigen::Map<const row_major>(wk.tile.data(), m, n) * xm;
            }
        });
}

}  // namespace svq::detail
