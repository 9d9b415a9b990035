// Trellis-coded quantization of a weight matrix (docs/trellis.md).
//
//   svq::trellis_matrix q = svq::quantize_trellis(w, rows, cols, {.bits_per_64 = 192});  // 3 bits per weight
//   q.gemv(x, y);                          // y = Wq x, 16 weights per few instructions
//   std::vector<float> back = q.dequantize();
//
// Each row is rotated (the randomized Hadamard rotation of rotate/), divided
// by its RMS, and the rows are coded as one stream per segment of weights by
// a bitshift trellis: weight t is reconstructed from the L-bit window of the
// stream that starts at bit floor(t bits_per_64 / 64), through a fixed code
// (kernels/trellis.hpp, trellis_code), times its row's factor (a bfloat16).
// Consecutive windows overlap in all but their last bits, so the windows a
// stream can produce form a trellis of 2^L states, and the encoder picks
// the stream of least squared error by the Viterbi algorithm (exactly, over
// all streams of the segment). Decoding one weight is a shift, a mask, a
// multiply-add and a byte sum, 16 weights at a time in vector lanes.
#pragma once

#include <svq/core/checks.hpp>
#include <svq/core/half.hpp>
#include <svq/core/parallel.hpp>
#include <svq/error.hpp>
#include <svq/kernels/batch.hpp>
#include <svq/kernels/dense.hpp>
#include <svq/kernels/portable.hpp>
#include <svq/kernels/trellis.hpp>
#include <svq/rotate/fwht.hpp>
#include <svq/rotate/hadamard_rotation.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace svq {

struct trellis_config {
    // Stored bits per 64 weights, 64..320: the code's rate is bits_per_64 / 64
    // bits per weight (192: 3, 208: 3.25); weight t of a segment takes
    // floor((t + 1) b / 64) - floor(t b / 64) new bits of the stream.
    unsigned bits_per_64 = 192;
    // L, 4..16: each weight is decoded from an L-bit window of the stream, and
    // the encoder's trellis has 2^L states (its time grows as 2^L; its error
    // falls by about 0.3 dB per 2 bits of L at 3 bpw).
    unsigned state_bits = 12;
    bool rotate = true;                        // randomized Hadamard rotation of each row first
    std::uint64_t seed = 0x5356512d524f54ull;  // rotation seed (stored)

    friend bool operator==(const trellis_config&, const trellis_config&) = default;
};

inline std::string to_string(const trellis_config& c) {
    return fmt::format("trellis bits_per_64={} ({} bpw code) L={} rotate={}", c.bits_per_64, c.bits_per_64 / 64.0,
                       c.state_bits, c.rotate ? "yes" : "no");
}

namespace detail {

// The scale of the codes in the encoder's units: a row divided by its RMS
// is matched against trellis_gain / trellis_code_rms times the codes. Best
// measured between 1.05 and 1.1 on Gaussian rows for L = 10..12 and 2 to 4
// bits per weight (the trellis reaches the larger codes more rarely than
// the smaller ones); the row's stored factor is then refitted by least
// squares.
inline constexpr double trellis_gain = 1.08;

inline void check_trellis_config(const trellis_config& c, const char* who) {
    if (c.bits_per_64 < 64 || c.bits_per_64 > 320)
        throw invalid_argument(fmt::format("{}: bits_per_64 = {} is outside 64..320", who, c.bits_per_64));
    if (c.state_bits < 4 || c.state_bits > 16)
        throw invalid_argument(fmt::format("{}: state_bits = {} is outside 4..16", who, c.state_bits));
    if ((c.bits_per_64 + 63) / 64 > c.state_bits)
        throw invalid_argument(fmt::format("{}: bits_per_64 = {} shifts up to {} bits per weight, more than "
                                           "state_bits = {}",
                                           who, c.bits_per_64, (c.bits_per_64 + 63) / 64, c.state_bits));
}

// The sizes of the stored stream, from (rows, cols, config) in one place.
// The rows' weights, row-major, are cut into segments of segment_weights
// (the last one shorter); each segment is a stream of its own, starting on a
// byte, of bits(n) = floor((n - 1) b / 64) + L bits for n weights.
struct trellis_layout {
    std::size_t rows = 0;
    std::size_t cols = 0;
    unsigned bits64 = 0;
    unsigned L = 0;
    std::size_t segment_weights = 0;  // a multiple of 16
    std::size_t segments = 0;
    std::size_t segment_bytes = 0;  // bytes of every segment but the last
    std::size_t payload_bytes = 0;

    static std::size_t bits_of(std::size_t n, unsigned bits64, unsigned L) noexcept {
        return n == 0 ? 0 : trellis_bit(n - 1, bits64) + L;
    }
    std::size_t weights() const noexcept { return rows * cols; }
    // Every stored bit: the payload, a 16-bit factor per row, the 64-bit seed when rotated.
    std::size_t stored_bits(bool rotate) const noexcept { return payload_bytes * 8 + 16 * rows + (rotate ? 64 : 0); }
    std::size_t weights_in(std::size_t segment) const noexcept {
        return segment + 1 < segments ? segment_weights : weights() - segment * segment_weights;
    }
    // Bytes the encoder's back pointers take per weight of a segment.
    std::size_t back_bytes() const noexcept { return std::size_t{1} << (L - bits64 / 64); }
};

// Segments hold 2^22 bytes of the encoder's back pointers (2^(L - k) per
// weight, k = floor(b / 64)), so that the backward pass of the Viterbi
// search reads them from cache, but at least 4,096 weights (fewer where
// 4,096 would pass 2^25 bytes: L = 15 and 16 at k = 1, L = 16 at k = 2) and
// at most 65,536. At L = 12: 4,096 weights for 2 <= b / 64 < 3 (b = 191, the
// largest rate within 3 bpw on 4096 columns), 8,192 for 3 <= b / 64 < 4.
// Each segment costs up to L - k + 7 bits of start and padding (about
// 0.003 bpw at 4,096 weights and L = 12).
inline trellis_layout make_trellis_layout(std::size_t rows, std::size_t cols, const trellis_config& c,
                                          const char* who) {
    check_trellis_config(c, who);
    if (rows == 0 || cols == 0) throw invalid_argument(fmt::format("{}: matrix shape {} x {} is empty", who, rows, cols));
    const std::size_t n = checked_size(rows, cols, who);
    if (n > (std::size_t{1} << 56))
        throw overflow_error(fmt::format("{}: a {} x {} matrix has more than 2^56 weights", who, rows, cols));
    trellis_layout l;
    l.rows = rows;
    l.cols = cols;
    l.bits64 = c.bits_per_64;
    l.L = c.state_bits;
    const std::size_t by_memory = (std::size_t{1} << 22) / l.back_bytes();
    const std::size_t floor = std::min<std::size_t>(4096, (std::size_t{1} << 25) / l.back_bytes());
    l.segment_weights = std::min<std::size_t>(std::clamp<std::size_t>(by_memory, floor, 65536), (n + 15) / 16 * 16);
    l.segments = (n + l.segment_weights - 1) / l.segment_weights;
    l.segment_bytes = (trellis_layout::bits_of(l.segment_weights, l.bits64, l.L) + 7) / 8;
    l.payload_bytes = (l.segments - 1) * l.segment_bytes +
                      (trellis_layout::bits_of(l.weights_in(l.segments - 1), l.bits64, l.L) + 7) / 8;
    return l;
}

// Writes the `count` low bits of v at bit `bit` of p, first bit most significant (p zeroed there).
inline void put_trellis_bits(std::uint8_t* p, std::size_t bit, std::uint32_t v, unsigned count) noexcept {
    for (unsigned i = 0; i < count; ++i)
        if ((v >> (count - 1 - i)) & 1u) p[(bit + i) >> 3] |= static_cast<std::uint8_t>(0x80u >> ((bit + i) & 7));
}

// One thread's buffers of the Viterbi search.
struct trellis_work {
    std::vector<float> cost, next, minprev, zeros, wn;
    std::vector<std::uint8_t> back;
    std::vector<std::uint32_t> states;
    explicit trellis_work(const trellis_layout& l)
        : cost(std::size_t{1} << l.L), next(cost.size()), minprev(l.back_bytes() + 16), zeros(cost.size() + 16),
          wn(l.segment_weights), back(l.segment_weights * l.back_bytes()), states(l.segment_weights) {}
};

// The stream of least squared error sum_t (wn_t - c z(state_t))^2 over the
// n weights of one segment (Viterbi), written to `out` (zeroed, its bytes).
// zf: the 2^L codes as floats.
inline void trellis_viterbi(const float* wn, std::size_t n, const float* zf, float c, const trellis_layout& l,
                            trellis_work& wk, std::uint8_t* out) {
    const unsigned L = l.L, b = l.bits64;
    const std::size_t stride = l.back_bytes();
    trellis_add(wk.zeros.data(), 0.0f, zf, wn[0], c, L, 0, wk.cost.data());
    for (std::size_t t = 1; t < n; ++t) {
        const unsigned k = trellis_shift(t, b);
        const float least = trellis_min(wk.cost.data(), L, k, wk.minprev.data(), wk.back.data() + t * stride);
        trellis_add(wk.minprev.data(), least, zf, wn[t], c, L, k, wk.next.data());
        std::swap(wk.cost, wk.next);
    }
    const auto best = static_cast<std::uint32_t>(std::min_element(wk.cost.begin(), wk.cost.end()) - wk.cost.begin());
    std::uint32_t* s = wk.states.data();
    s[n - 1] = best;
    for (std::size_t t = n - 1; t > 0; --t) {
        const unsigned k = trellis_shift(t, b);
        const std::uint32_t x = s[t] >> k;
        s[t - 1] = (std::uint32_t{wk.back[t * stride + x]} << (L - k)) | x;
    }
    put_trellis_bits(out, 0, s[0], L);
    for (std::size_t t = 1; t < n; ++t) {
        const unsigned k = trellis_shift(t, b);
        put_trellis_bits(out, trellis_bit(t - 1, b) + L, s[t] & ((std::uint32_t{1} << k) - 1u), k);
    }
}

}  // namespace detail

// A matrix in the trellis code: the segments' streams, one bfloat16 factor
// per row, the configuration (and with it the rotation). Weight (r, c) in the
// rotated basis is factor_r * trellis_code(its window) (a float product).
// Satisfies QuantizedMatrix (concepts.hpp).
class trellis_matrix {
public:
    trellis_matrix() = default;

    // Rebuilds a matrix from its stored parts (what a file reader has): the
    // payload of layout().payload_bytes bytes and one factor per row (the
    // bits of a bfloat16). Every stream decodes to some matrix, so only the
    // sizes and the factors can be checked here: svq::invalid_argument for a
    // bad configuration or shape, svq::corrupt_data for a payload of the
    // wrong length or a factor that is not finite or above 2^96 in magnitude
    // (the encoder's are below 2^93; a larger one could decode past the
    // float range).
    trellis_matrix(std::size_t rows, std::size_t cols, const trellis_config& config, std::vector<std::uint8_t> payload,
                   std::vector<std::uint16_t> factors)
        : trellis_matrix(rows, cols, config, std::move(payload)) {
        if (factors.size() != rows)
            throw corrupt_data(fmt::format("trellis matrix {} x {}: {} row factors, need {}", rows, cols,
                                           factors.size(), rows));
        for (std::size_t r = 0; r < rows; ++r)
            if (!(std::fabs(bf16_to_float(factors[r])) <= max_factor))
                throw corrupt_data(fmt::format("trellis matrix: factor of row {} is {} (finite, |f| <= 2^96)", r,
                                               bf16_to_float(factors[r])));
        factors_ = std::move(factors);
    }

    // Copies share nothing mutable; a moved-from matrix is empty (rows() == 0).
    trellis_matrix(const trellis_matrix&) = default;
    trellis_matrix& operator=(const trellis_matrix&) = default;
    trellis_matrix(trellis_matrix&& o) noexcept { *this = std::move(o); }
    trellis_matrix& operator=(trellis_matrix&& o) noexcept {
        if (this != &o) {
            config_ = o.config_;
            layout_ = std::exchange(o.layout_, detail::trellis_layout{});
            payload_ = std::move(o.payload_);
            factors_ = std::move(o.factors_);
            lanes_ = std::move(o.lanes_);
            rotation_ = std::move(o.rotation_);
        }
        return *this;
    }
    ~trellis_matrix() = default;

    // The largest factor magnitude a stored matrix may have.
    static constexpr float max_factor = 0x1p96f;

    std::size_t rows() const noexcept { return layout_.rows; }
    std::size_t cols() const noexcept { return layout_.cols; }
    const trellis_config& config() const noexcept { return config_; }
    const detail::trellis_layout& layout() const noexcept { return layout_; }
    // The stored stream (layout().payload_bytes bytes).
    std::span<const std::uint8_t> payload() const noexcept {
        return {payload_.data(), std::min(payload_.size(), layout_.payload_bytes)};
    }
    // The rows' factors (bfloat16 bits), and row r's as a float.
    std::span<const std::uint16_t> factors() const noexcept { return factors_; }
    float factor(std::size_t r) const noexcept { return bf16_to_float(factors_[r]); }
    const hadamard_rotation* rotation() const noexcept { return rotation_.get(); }

    // Every stored bit: the payload, a 16-bit factor per row, the seed (when rotated).
    std::size_t stored_bits() const noexcept { return layout_.stored_bits(config_.rotate); }
    double bits_per_weight() const noexcept {
        return rows() == 0 ? 0.0 : static_cast<double>(stored_bits()) / static_cast<double>(rows() * cols());
    }

    // The codes of row r (cols integers), in the rotated basis.
    void row_codes(std::size_t r, std::span<int> z) const {
        check_row(r, z.size(), "trellis_matrix::row_codes");
        for_each_run(
            r, [&](const std::uint8_t* p, std::size_t first, std::size_t col, std::size_t blocks) {
                detail::trellis_codes_portable(p, first, 16 * blocks, layout_.bits64, layout_.L, z.data() + col);
            },
            [&](std::size_t col, int code) { z[col] = code; });
    }

    // Row r (cols floats) in the original basis.
    void decode_row(std::size_t r, std::span<float> out) const {
        check_row(r, out.size(), "trellis_matrix::decode_row");
        std::vector<float> scratch(rotation_ ? rotation_->scratch_size() : 0);
        decode_original(r, out.data(), scratch);
    }

    // All rows, row-major (rows * cols floats). Outputs of 8 MB or more:
    // each row is decoded and rotated in one of two buffers that stay in the
    // L1 cache (a row's streaming stores do not wait on the next row's
    // decode into the same lines) and written with streaming stores (which
    // read nothing back).
    void dequantize(std::span<float> out, unsigned threads = 1) const {
        if (out.size() != rows() * cols())
            throw invalid_argument(fmt::format("trellis_matrix::dequantize: output has {} entries, the matrix {} x {}",
                                               out.size(), rows(), cols()));
        const bool stream = out.size() * sizeof(float) >= detail::stream_bytes;
        detail::parallel_chunks(rows(), threads, detail::chunk_rows(rows(), threads), [&](std::size_t first,
                                                                                          std::size_t end) {
            std::vector<float> scratch(rotation_ ? rotation_->scratch_size() : 0);
            detail::aligned_floats buffer(stream ? 2 * cols() : 0);
            detail::row_streamer streamer;
            for (std::size_t r = first; r < end; ++r) {
                float* dst = out.data() + r * cols();
                float* row = stream ? buffer.data() + (r % 2) * cols() : dst;
                decode_original(r, row, scratch);
                if (stream) {
                    streamer.start(row, dst, cols());
                    streamer.finish();
                }
            }
            if (stream) detail::row_streamer::fence();
        });
    }
    std::vector<float> dequantize() const {
        std::vector<float> out(rows() * cols());
        dequantize(out);
        return out;
    }

    // y = Wq x (x: cols floats, y: rows floats): x is rotated forward once,
    // then each row is factor_r * sum_c z_rc (R x)_c, decoded and dotted
    // 16 weights at a time without writing a float row.
    void gemv(std::span<const float> x, std::span<float> y, unsigned threads = 1) const {
        gemv_batch(x, y, 1, threads);
    }

    // Y = Wq X for `batch` vectors (x: vector c at c * cols; y: vector c at
    // c * rows). One vector: the fused dot; up to 31: each row decoded once
    // (rotated basis) and dotted with every vector; from 32 on: tiles of 64
    // decoded rows times X by Eigen's GEMM.
    void gemv_batch(std::span<const float> x, std::span<float> y, std::size_t batch, unsigned threads = 1) const {
        detail::check_gemv_shapes(x.size(), y.size(), batch, rows(), cols(), "trellis_matrix::gemv");
        detail::aligned_floats xr(x.begin(), x.end());
        if (rotation_) rotation_->forward_rows(xr, batch);
        const std::size_t n = cols();
        if (batch >= detail::gemm_batch) {
            struct none {};
            detail::tiled_gemm(
                rows(), n, batch, threads, xr.data(), y.data(), [] { return none{}; },
                [&](none&, std::size_t r, float* out) { decode_rotated(r, out); });
            return;
        }
        detail::parallel_chunks(
            rows(), threads, detail::chunk_rows(rows(), threads), [&] { return detail::aligned_floats(n); },
            [&](detail::aligned_floats& row, std::size_t first, std::size_t end) {
                for (std::size_t r = first; r < end; ++r) {
                    if (batch == 1) {
                        y[r] = factor(r) * dot_rotated(r, xr.data());
                        continue;
                    }
                    decode_rotated(r, row.data());
                    for (std::size_t c = 0; c < batch; ++c)
                        y[c * rows() + r] = detail::float_dot(row.data(), xr.data() + c * n, n);
                }
            });
    }

private:
    trellis_matrix(std::size_t rows, std::size_t cols, const trellis_config& config, std::vector<std::uint8_t> payload)
        : config_(config), layout_(detail::make_trellis_layout(rows, cols, config, "trellis_matrix")),
          lanes_(std::make_shared<const detail::trellis_lanes>(config.bits_per_64, config.state_bits)) {
        if (payload.size() != layout_.payload_bytes)
            throw corrupt_data(fmt::format("trellis matrix {} x {} ({}) needs {} bytes of payload, got {}", rows, cols,
                                           to_string(config), layout_.payload_bytes, payload.size()));
        payload.resize(layout_.payload_bytes + 16);  // the kernels read up to 16 bytes from a block's first byte
        payload_ = std::move(payload);
        if (config_.rotate) rotation_ = std::make_shared<const hadamard_rotation>(cols, config_.seed);
    }
    friend trellis_matrix quantize_trellis(std::span<const float>, std::size_t, std::size_t, const trellis_config&,
                                           unsigned);

    void check_row(std::size_t r, std::size_t size, const char* who) const {
        if (r >= rows()) throw invalid_argument(fmt::format("{}: row {} of a matrix of {} rows", who, r, rows()));
        if (size != cols()) throw invalid_argument(fmt::format("{}: output has {} entries, cols = {}", who, size, cols()));
    }

    // Calls blocks(p, first, first_col, count) for each run of whole blocks
    // of 16 of row r inside one segment (p: the segment, first: the run's
    // first weight in it; cols a multiple of 16), else one(col, code) for
    // each weight.
    template <class Blocks, class One>
    void for_each_run(std::size_t r, Blocks&& blocks, One&& one) const {
        const detail::trellis_layout& l = layout_;
        const std::size_t first = r * l.cols, end = first + l.cols;
        if (l.cols % 16 == 0) {
            for (std::size_t t = first; t < end;) {
                const std::size_t seg = t / l.segment_weights, local = t - seg * l.segment_weights;
                const std::size_t count = std::min(end - t, l.segment_weights - local);
                blocks(payload_.data() + seg * l.segment_bytes, local, t - first, count / 16);
                t += count;
            }
            return;
        }
        for (std::size_t t = first; t < end; ++t) {
            const std::size_t seg = t / l.segment_weights, local = t - seg * l.segment_weights;
            one(t - first, detail::trellis_code(detail::trellis_window(payload_.data() + seg * l.segment_bytes,
                                                                       detail::trellis_bit(local, l.bits64), l.L)));
        }
    }

    // Row r in the original basis. Rotated rows whose R is one Walsh-Hadamard
    // block (cols a power of two, >= 16): the first four stages of H run on
    // each block's integer codes as they are decoded, then the float stages
    // half = 16 .. cols / 2 and the signs (docs/format.md, 4.8); otherwise
    // the row in the rotated basis, then R^T in floats.
    void decode_original(std::size_t r, float* out, std::vector<float>& scratch) const {
        if (rotation_ && rotation_->single_hadamard() && cols() >= 16) {
            const float f = factor(r) * detail::fwht_scale<float>(cols());
            for_each_run(
                r, [&](const std::uint8_t* p, std::size_t first, std::size_t col, std::size_t count) {
                    detail::trellis_decode<true>(*lanes_, p, first, count, layout_.bits64, layout_.L, f, out + col);
                },
                [](std::size_t, int) {});  // not reached: cols is a multiple of 16
            detail::hadamard_stages(out, cols(), 16, rotation_->signs().data());
            return;
        }
        decode_rotated(r, out);
        if (rotation_) rotation_->inverse(std::span<float>(out, cols()), scratch);
    }

    void decode_rotated(std::size_t r, float* out) const {
        const float f = factor(r);
        for_each_run(
            r, [&](const std::uint8_t* p, std::size_t first, std::size_t col, std::size_t count) {
                detail::trellis_decode(*lanes_, p, first, count, layout_.bits64, layout_.L, f, out + col);
            },
            [&](std::size_t col, int code) { out[col] = static_cast<float>(code) * f; });
    }

    // sum_c z_rc xr_c (xr rotated).
    float dot_rotated(std::size_t r, const float* xr) const {
        float s = 0.0f;
        for_each_run(
            r, [&](const std::uint8_t* p, std::size_t first, std::size_t col, std::size_t count) {
                s += detail::trellis_dot(*lanes_, p, first, count, layout_.bits64, layout_.L, xr + col);
            },
            [&](std::size_t col, int code) { s = std::fma(static_cast<float>(code), xr[col], s); });
        return s;
    }

    trellis_config config_{};
    detail::trellis_layout layout_{};
    std::vector<std::uint8_t> payload_;  // layout_.payload_bytes + 16 bytes of zero padding
    std::vector<std::uint16_t> factors_;  // bfloat16
    std::shared_ptr<const detail::trellis_lanes> lanes_;
    std::shared_ptr<const hadamard_rotation> rotation_;
};

// Quantizes w (rows x cols, row-major) to the trellis code of `config`.
// Segments are encoded on `threads` threads (0: all cores); the result does
// not depend on the count. Throws svq::invalid_argument for an empty or
// ragged shape, a bad configuration, a weight that is not finite (naming its
// row, column and value) or larger than 2^64 in magnitude.
inline trellis_matrix quantize_trellis(std::span<const float> w, std::size_t rows, std::size_t cols,
                                       const trellis_config& config, unsigned threads = 1) {
    constexpr const char* who = "quantize_trellis";
    const detail::trellis_layout l = detail::make_trellis_layout(rows, cols, config, who);
    const float peak = detail::check_matrix(w, rows, cols, who);
    if (peak > 0x1p64f)
        throw invalid_argument(fmt::format("{}: largest weight magnitude {} is above 2^64; scale the matrix down first",
                                           who, peak));
    trellis_matrix q(rows, cols, config, std::vector<std::uint8_t>(l.payload_bytes));
    std::vector<float> wr(w.begin(), w.end());
    if (q.rotation_) q.rotation_->forward_rows(wr, rows);
    std::vector<double> inv_rms = detail::row_rms(wr, rows, cols);
    for (double& v : inv_rms) v = v > 0.0 ? 1.0 / v : 0.0;
    std::vector<float> zf(std::size_t{1} << l.L);
    for (std::size_t s = 0; s < zf.size(); ++s) zf[s] = static_cast<float>(detail::trellis_code(static_cast<std::uint32_t>(s)));
    const auto c = static_cast<float>(detail::trellis_gain / detail::trellis_code_rms);
    detail::parallel_chunks(
        l.segments, threads, 1, [&] { return detail::trellis_work(l); },
        [&](detail::trellis_work& wk, std::size_t first, std::size_t end) {
            for (std::size_t seg = first; seg < end; ++seg) {
                const std::size_t n = l.weights_in(seg), t0 = seg * l.segment_weights;
                for (std::size_t i = 0; i < n; ++i)
                    wk.wn[i] = static_cast<float>(wr[t0 + i] * inv_rms[(t0 + i) / cols]);
                detail::trellis_viterbi(wk.wn.data(), n, zf.data(), c, l, wk, q.payload_.data() + seg * l.segment_bytes);
            }
        });
    // Each row's factor: the least-squares fit of the row to its codes, to the
    // nearest bfloat16 (a relative error below 2^-9: at 3 bpw 0.001 dB).
    q.factors_.assign(rows, 0);
    detail::parallel_chunks(rows, threads, detail::chunk_rows(rows, threads), [&](std::size_t first, std::size_t end) {
        std::vector<int> z(cols);
        for (std::size_t r = first; r < end; ++r) {
            q.row_codes(r, z);
            double num = 0.0, den = 0.0;
            for (std::size_t i = 0; i < cols; ++i) {
                num += static_cast<double>(wr[r * cols + i]) * z[i];
                den += static_cast<double>(z[i]) * z[i];
            }
            q.factors_[r] = float_to_bf16(den > 0.0 ? static_cast<float>(num / den) : 0.0f);
        }
    });
    return q;
}

// The configuration of the largest bits_per_64 whose matrix of rows x cols
// stores at most target_bpw bits per weight (every stored bit counted), with
// L = state_bits. Throws svq::invalid_argument when none does (naming the
// target and the smallest reachable rate), the target is not a positive
// number or state_bits is outside 4..16, svq::overflow_error for a shape of
// more than 2^56 weights.
inline trellis_config trellis_config_for(std::size_t rows, std::size_t cols, double target_bpw,
                                         unsigned state_bits = 12, bool rotate = true) {
    if (!(target_bpw > 0.0) || !std::isfinite(target_bpw))
        throw invalid_argument(fmt::format("trellis_config_for: target {} bits per weight is not a positive number",
                                           target_bpw));
    trellis_config c{.bits_per_64 = 64, .state_bits = state_bits, .rotate = rotate};
    const auto bpw = [&](unsigned b) {
        c.bits_per_64 = b;
        const detail::trellis_layout l = detail::make_trellis_layout(rows, cols, c, "trellis_config_for");
        return static_cast<double>(l.stored_bits(rotate)) / static_cast<double>(l.weights());
    };
    const double lowest = bpw(64);
    if (lowest > target_bpw)
        throw invalid_argument(fmt::format("trellis_config_for: no trellis configuration of a {} x {} matrix stores "
                                           "<= {} bits per weight (the least is {:.4f})",
                                           rows, cols, target_bpw, lowest));
    unsigned best = 64;
    for (unsigned b = 65; b <= 320 && (b + 63) / 64 <= state_bits && bpw(b) <= target_bpw; ++b) best = b;
    c.bits_per_64 = best;
    return c;
}

}  // namespace svq
