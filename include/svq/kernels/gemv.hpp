// Fast decoding and fused matrix-vector products for a quantized_matrix.
//
//   svq::matrix_decoder dec(q);         // tables built once per (N, K), cached here
//   dec.dequantize(out);                // == q.dequantize(out), bit for bit
//   dec.gemv(x, y);                     // y = Wq x without materialising Wq
//   dec.gemv_batch(x, y, 16);           // Y = Wq X for 16 vectors, one decode per group
//   dec.gemv_batch(x, y, 64);           // from 32 vectors: tiles of decoded rows times X (Eigen's GEMM)
//
// Decoding a row: its fields come from the format's reader
// (row_format::read_fields, format/row_format.hpp), its points from the
// table-driven split-order unrank (for the speed configurations, whose index
// fits one word, the dense walk pvq_split_index::unrank_dense over the whole
// row, chosen by itself: docs/performance.md, "Speed configurations"), and the
// pulses are scaled by the format's factor s * level / ||y||
// (detail::group_factor_of: double factor, then float(y_i) * float(factor)),
// so dequantize matches quantized_matrix::dequantize bit for bit.
//
// gemv: the stored rows are w' = w R^T (rotate/hadamard_rotation.hpp), so
// w . x = w' . (R x): x is rotated forward once, and every row is a sum over
// groups of factor_j * <y_j, (R x)_j> with integer pulses y_j; nothing is
// inverse-rotated. Rows are independent; `threads` share them in chunks
// handed out as each thread finishes one (detail::parallel_chunks; 0: all cores).
//
// gemv_batch with gemm_batch vectors or more decodes tiles of tile_rows() rows
// (in the rotated basis) and multiplies each with the rotated X by Eigen's
// float GEMM: the decode is paid once per weight and the products run at
// GEMM speed (docs/performance.md, "Batched products"). Its sums are in
// Eigen's order, so its results differ from gemv's in the last bits; both
// are within the relative error that tests/test_kernels.cpp states.
#pragma once

#include <svq/core/bitstream.hpp>
#include <svq/core/parallel.hpp>
#include <svq/error.hpp>
#include <svq/format/split_index.hpp>
#include <svq/kernels/batch.hpp>
#include <svq/kernels/dense.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/pvq/pulses.hpp>
#include <svq/simd/compat.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <thread>
#include <vector>

namespace svq {

// The kernels the decoder calls, chosen at compile time: kernels/dense.hpp.

class matrix_decoder {
public:
    // Uses q's row format (its index tables and gain levels) and builds the
    // dense path's tables. The decoder reads q's words: q must outlive it, and
    // a temporary matrix is refused at compile time.
    explicit matrix_decoder(const quantized_matrix& q) : q_(&q), f_(&q.format()), l_(q.layout()) {
        rotation_ = q.rotation();
        integer_ = detail::integer_stage_rotation(l_, rotation_);
        if (full_index().dense()) {
            units_1_ = detail::dense_units(f_->gain_levels(0), l_.pulses, 1.0);
            if (integer_) units_n_ = detail::dense_units(f_->gain_levels(0), l_.pulses, static_cast<double>(l_.cols));
        }
    }
    explicit matrix_decoder(const quantized_matrix&& q) = delete;

    std::size_t rows() const noexcept { return l_.rows; }
    std::size_t cols() const noexcept { return l_.cols; }
    const pvq_split_index& full_index() const noexcept { return f_->full_index(); }

    // Row r before the inverse rotation (cols floats). Throws svq::corrupt_data
    // for an index >= V(N, K) or a bad row scale code.
    void decode_row_rotated(std::size_t r, float* out) const {
        row_scratch sc = make_scratch();
        decode_rotated(r, out, sc);
    }

    // All rows, row-major (rows * cols floats), bit-identical to quantized_matrix::dequantize.
    void dequantize(std::span<float> out, unsigned threads = 1) const {
        if (out.size() != rows() * cols())
            throw invalid_argument(fmt::format("matrix_decoder::dequantize: output has {} entries, the matrix {} x {}",
                                               out.size(), rows(), cols()));
        // Large outputs: each row is decoded (and inverse-rotated) in one of
        // two row buffers that stay in the L1 cache, then written to memory
        // with streaming stores (which read nothing back) while the next row
        // is decoded (detail::row_streamer).
        const bool stream = rows() * cols() * sizeof(float) >= detail::stream_bytes;
        struct worker {
            row_scratch sc;
            std::vector<float> scratch;
            detail::aligned_floats buffers;
        };
        const auto init = [&] {
            return worker{make_scratch(), std::vector<float>(rotation_ ? rotation_->scratch_size() : 0),
                          detail::aligned_floats(stream ? 2 * cols() : 0)};
        };
        detail::parallel_chunks(
            rows(), threads, detail::chunk_rows(rows(), threads), init,
            [&](worker& wk, std::size_t first, std::size_t end) {
                row_scratch& sc = wk.sc;
                std::vector<float>& scratch = wk.scratch;
                detail::aligned_floats& buffers = wk.buffers;
                detail::row_streamer streamer;
                for (std::size_t r = first; r < end; ++r) {
                    float* dst = out.data() + r * cols();
                    float* row = stream ? buffers.data() + (r % 2) * cols() : dst;
                    if (full_index().dense()) {
                        decode_row_dense(r, row, sc, stream ? &streamer : nullptr, integer_);
                    } else if (integer_) {  // the factors with norm cols, then the row's points in place
                        decode_row_impl(
                            r, nullptr, sc,
                            [&](std::size_t first_col, const int*, std::size_t dim, float factor) {
                                sc.factors[first_col / dim] = factor;
                            },
                            static_cast<double>(cols()));
                        detail::integer_stage_inverse(sc.y.data(), sc.factors.data(), l_.group_dim, cols(),
                                                      rotation_->signs().data(), row);
                    } else {
                        decode_row_impl(r, row, sc, [](std::size_t, const int*, std::size_t, float) {});
                    }
                    if (rotation_ && !integer_) rotation_->inverse(std::span<float>(row, cols()), scratch);
                    if (f_->may_overflow()) detail::check_finite_row(row, cols(), r);
                    if (stream) {
                        streamer.finish();  // the previous row (usually written already)
                        streamer.start(row, dst, cols());
                    }
                }
                if (stream) {
                    streamer.finish();
                    detail::row_streamer::fence();
                }
            });
    }

    // y = Wq x. x: cols floats, y: rows floats.
    void gemv(std::span<const float> x, std::span<float> y, unsigned threads = 1) const {
        gemv_batch(x, y, 1, threads);
    }

    // Y = Wq X for `batch` vectors: x: batch * cols floats (vector c at c * cols),
    // y: batch * rows floats (vector c at c * rows). Each group is decoded once.
    void gemv_batch(std::span<const float> x, std::span<float> y, std::size_t batch, unsigned threads = 1) const {
        detail::check_gemv_shapes(x.size(), y.size(), batch, rows(), cols(), "matrix_decoder::gemv");
        detail::aligned_floats xr(x.begin(), x.end());
        if (rotation_) rotation_->forward_rows(xr, batch);
        if (batch >= gemm_batch) {
            detail::tiled_gemm(
                rows(), cols(), batch, threads, xr.data(), y.data(), [&] { return make_scratch(); },
                [&](row_scratch& sc, std::size_t r, float* out) { decode_rotated(r, out, sc); });
            return;
        }
        struct worker {
            row_scratch sc;
            std::vector<float> acc;
        };
        const auto init = [&] { return worker{make_scratch(), std::vector<float>(batch)}; };
        detail::parallel_chunks(
            rows(), threads, detail::chunk_rows(rows(), threads), init,
            [&](worker& wk, std::size_t first, std::size_t end) {
                row_scratch& sc = wk.sc;
                std::vector<float>& acc = wk.acc;
                for (std::size_t r = first; r < end; ++r) {
                    if (full_index().dense()) {  // decode the row once, then one float dot per vector
                        decode_row_dense(r, sc.row.data(), sc);
                        for (std::size_t c = 0; c < batch; ++c)
                            y[c * rows() + r] = detail::float_dot(sc.row.data(), xr.data() + c * cols(), cols());
                        continue;
                    }
                    std::fill(acc.begin(), acc.end(), 0.0f);
                    decode_row_impl(
                        r, nullptr, sc, [&](std::size_t first_col, const int* p, std::size_t dim, float factor) {
                            for (std::size_t c = 0; c < batch; ++c)
                                acc[c] += factor * detail::pulse_dot(p, xr.data() + c * cols() + first_col, dim);
                        });
                    for (std::size_t c = 0; c < batch; ++c) y[c * rows() + r] = acc[c];
                }
            });
    }

    // gemv_batch multiplies tiles of decoded rows with Eigen's GEMM from this
    // many vectors on (kernels/batch.hpp).
    static constexpr std::size_t gemm_batch = detail::gemm_batch;
    // Rows per tile of that path: 64, fewer where 64 rows pass 4 MB (cols > 16384).
    std::size_t tile_rows() const noexcept { return detail::gemm_tile_rows(cols()); }

private:
    // Per-thread buffers of decode_row_impl.
    struct row_scratch {
        std::vector<std::uint64_t> index;  // the row's full-group indices, limbs() words each
        std::array<std::uint64_t, detail::max_split_limbs> tail_index{};
        std::vector<int> y;                // the row's pulses, group_dim ints per group
        std::vector<std::uint32_t> codes;  // the row's gain codes
        pvq_split_index::unrank_workspace ws;
        pvq_split_index::dense_workspace dense;
        std::vector<std::int8_t> y8;  // dense path: the row's full-group pulses
        detail::aligned_floats row;   // dense gemv: the decoded row (rotated domain)
        std::vector<float> factors;   // the row's group factors
    };
    row_scratch make_scratch() const {
        row_scratch s;
        s.index.resize(l_.full_groups * full_index().limbs());
        s.y.resize(l_.groups_per_row() * l_.group_dim);
        s.codes.resize(l_.groups_per_row());
        s.factors.resize(l_.groups_per_row());
        if (full_index().dense()) {
            s.y8.resize(l_.full_groups * l_.group_dim);
            s.row.resize(l_.cols);
        }
        return s;
    }

    // Row r in the rotated basis (no inverse rotation) into out (cols floats).
    void decode_rotated(std::size_t r, float* out, row_scratch& sc) const {
        if (full_index().dense())
            decode_row_dense(r, out, sc);
        else
            decode_row_impl(r, out, sc, [](std::size_t, const int*, std::size_t, float) {});
        if (f_->may_overflow()) detail::check_finite_row(out, cols(), r);
    }

    // Dense path (full_index().dense(): the speed configurations, index in one word):
    // reads each full group's index and gain code with one bit-field read,
    // unranks the row's full groups together (pvq_split_index::unrank_dense,
    // int8 pulses), then scales each group by detail::group_factor's formula
    // (the energy summed from the int8 pulses: the same integer), so the
    // floats equal the reference decoder's. The tail group takes the general path.
    // stream: null, or a finished row to write to memory meanwhile (dequantize).
    // integer: the row in the original basis by the integer-stage rotation
    // (detail::integer_stage_inverse; the matrix has no tail group then).
    void decode_row_dense(std::size_t r, float* out, row_scratch& sc, detail::row_streamer* stream = nullptr,
                          bool integer = false) const {
        const std::size_t n = l_.group_dim, full = l_.full_groups;
        const std::span<const std::uint64_t> words = q_->words();
        if (r + 1 < l_.rows) {
            // The next row's words (rows are read in order): one row of lead time,
            // where the hardware prefetcher fell behind with the output streamed
            // out at the same time (the first load of a field was a fifth of the row).
            const std::size_t from = l_.row_bit_offset(r + 1) / 64;
            const std::size_t to = std::min(words.size(), (l_.row_bit_offset(r + 1) + l_.bits_per_row()) / 64 + 1);
            for (std::size_t w = from; w < to; w += 8) __builtin_prefetch(words.data() + w);
        }
        const double s = f_->read_fields(words, r, sc.index.data(), sc.tail_index.data(), sc.codes.data());
        const std::uint32_t* codes = sc.codes.data();
        const std::uint64_t* index = sc.index.data();
        // The previous row (dequantize) streams out during the walk: one
        // 16-float line per node of the walk's last level, as many as the row has.
        if (stream != nullptr) {
            detail::row_streamer::lines lines = stream->take();
            full_index().unrank_dense(index, full, sc.y8.data(), sc.dense, lines);
            stream->give_back(lines);
        } else
            full_index().unrank_dense(index, full, sc.y8.data(), sc.dense);
        const auto scale = static_cast<float>(s);
        if (integer) {
            detail::integer_stage_dense(sc.y8.data(), codes, units_n_, scale, n, l_.cols, rotation_->signs().data(),
                                        sc.factors.data(), out, sc.y.data());
            return;
        }
        detail::scale_dense_groups8(sc.y8.data(), codes, units_1_, scale, full, n, sc.factors.data(), out);
        int* y = sc.y.data();
        if (l_.tail_dim != 0) {
            int* yt = y + full * n;
            f_->unrank_tail(sc.tail_index.data(), yt);
            const float factor = f_->factor(s, full, f_->gain_level(full, codes[full]), yt);
            detail::scale_pulses(yt, factor, out + full * n, l_.tail_dim);
        }
    }

    // Decodes row r: reads every group's index and gain code, unranks the full
    // groups together (pvq_split_index::unrank_batch), then per group writes
    // the scaled floats to out (when not null) and calls
    // on_group(first column, pulses, dim, factor). norm: group_factor_of's (1,
    // or cols for the integer-stage rotation). The pulses stay in sc.y.
    template <class OnGroup>
    void decode_row_impl(std::size_t r, float* out, row_scratch& sc, OnGroup&& on_group, double norm = 1.0) const {
        const double s = f_->read_fields(q_->words(), r, sc.index.data(), sc.tail_index.data(), sc.codes.data());
        const std::size_t groups = l_.groups_per_row();
        const std::uint32_t* codes = sc.codes.data();
        f_->unrank_points(sc.index.data(), sc.tail_index.data(), sc.y.data(), sc.ws);
        for (std::size_t j = 0; j < groups; ++j) {
            const std::size_t dim = f_->group_dim(j);
            const int* y = sc.y.data() + j * l_.group_dim;
            const float factor = f_->factor(s, j, f_->gain_level(j, codes[j]), y, norm);
            if (out != nullptr) detail::scale_pulses(y, factor, out + j * l_.group_dim, dim);
            on_group(j * l_.group_dim, y, dim, factor);
        }
    }

    const quantized_matrix* q_;
    const row_format* f_;  // q's
    matrix_layout l_;
    const hadamard_rotation* rotation_ = nullptr;  // q's
    bool integer_ = false;                         // detail::integer_stage_rotation
    detail::dense_units units_1_, units_n_;        // dense path: norm 1 and cols
};

}  // namespace svq
