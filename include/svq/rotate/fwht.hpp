// Fast Walsh-Hadamard transform (orthonormal), the O(n log n) core of the
// randomized Hadamard rotation in hadamard_rotation.hpp.
//
// H_n (Sylvester order: H_1 = [1], H_2n = [[H_n, H_n], [H_n, -H_n]]) is
// symmetric with H_n H_n = n I, so H_n / sqrt(n) is orthogonal and its own
// inverse. The transform runs log2(n) butterfly stages (half = 1, 2, 4, ...),
// each replacing (a, b) = (x[j], x[j + half]) by (a + b, a - b), then
// multiplies every element once by 1/sqrt(n).
//
// The scalar body and the xsimd body perform exactly the same additions,
// subtractions and the one final multiply on the same operands, so their
// results agree bit for bit (tests/test_rotate_fwht.cpp checks it).
#pragma once

#include <svq/error.hpp>
#include <svq/simd/compat.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <span>
#include <type_traits>

namespace svq {
namespace detail {

// The orthonormal scale 1/sqrt(n), rounded once to T; both bodies use this value.
template <class T>
inline T fwht_scale(std::size_t n) noexcept {
    return static_cast<T>(1.0 / std::sqrt(static_cast<double>(n)));
}

// Butterfly stages half = first, 2 first, ..., n / 2 of the unnormalised
// transform (no 1/sqrt(n): the caller folds it into its own factors), then,
// when post is not null, data[i] *= post[i]. With first = 1 and the scale
// left out this is the whole transform; the integer-stage inverse rotation
// (matrix/quantized_matrix.hpp) runs the stages below `first` exactly in
// integers and these in floats. n a power of two, first a power of two.
// Reference body:
template <class T>
inline void hadamard_stages_scalar(T* data, std::size_t n, std::size_t first, const T* post) noexcept {
    for (std::size_t half = first; half < n; half *= 2) {
        for (std::size_t base = 0; base < n; base += 2 * half) {
            for (std::size_t j = base; j < base + half; ++j) {
                const T a = data[j];
                const T b = data[j + half];
                data[j] = a + b;
                data[j + half] = a - b;
            }
        }
    }
    if (post != nullptr)
        for (std::size_t i = 0; i < n; ++i) data[i] *= post[i];
}

// Reference body of the orthonormal transform. data: n values, n a power of two (n >= 1).
template <class T>
inline void fwht_scalar(T* data, std::size_t n) noexcept {
    hadamard_stages_scalar<T>(data, n, 1, nullptr);
    const T scale = fwht_scale<T>(n);
    for (std::size_t i = 0; i < n; ++i) data[i] *= scale;
}

// Lane i of a batch pairs with lane i ^ Half in the butterfly stage of that half-width.
template <unsigned Half>
struct fwht_partner_lane {
    static constexpr unsigned get(unsigned index, unsigned /*size*/) noexcept { return index ^ Half; }
};

// Butterfly stages whose partners lie inside one batch (half < lanes), in
// ascending order from half = first (the stages below it are skipped). A
// lane with (i & half) == 0 holds a and needs a + b; the partner lane holds
// b and needs a - b. Both are partner + (+-1) * own, one fused multiply-add:
// the product by +-1 is exact, so the one rounding is that of a + b or
// a - b, as in the scalar body. signs[k]: the +-1 lane pattern of stage half = 2^k.
template <class Arch, class T, unsigned Half = 1>
inline xsimd::batch<T, Arch> fwht_in_register_from(xsimd::batch<T, Arch> x, const xsimd::batch<T, Arch>* signs,
                                                   std::size_t first) noexcept {
    if constexpr (Half < xsimd::batch<T, Arch>::size) {
        if (Half >= first) {
            const auto partner = simd::swizzle_lanes<fwht_partner_lane<Half>>(x);
            x = xsimd::fma(x, signs[0], partner);
        }
        return fwht_in_register_from<Arch, T, Half * 2>(x, signs + 1, first);
    } else {
        return x;
    }
}

// The butterfly network of Stages stages over 2^Stages values (batches) held
// in registers: stage s pairs a[t] with a[t + 2^s], in ascending s.
template <std::size_t Stages, class B>
inline void butterflies(B* a) noexcept {
    constexpr std::size_t m = std::size_t{1} << Stages;
#pragma GCC unroll 4
    for (std::size_t s = 0; s < Stages; ++s) {
        const std::size_t h = std::size_t{1} << s;
#pragma GCC unroll 16
        for (std::size_t t = 0; t < m; ++t) {
            if ((t & h) != 0) continue;
            const B x = a[t], y = a[t + h];
            a[t] = x + y;
            a[t + h] = x - y;
        }
    }
}

// Stages half, 2 half, ..., 2^(Stages - 1) half over groups of 2^Stages
// batches a stride `half` apart (half >= lanes): each element meets the
// same additions and subtractions, in the same stage order, as in the
// scalar body, with one load and one store per pass instead of per stage.
// Last: the pass ends the transform, so it applies the scale (when Scale) and
// then, when post is not null, multiplies by post[i] (the rotation's signs).
template <std::size_t Stages, bool Last, class Arch, class T, bool Scale = true>
inline void fwht_pass(Arch, T* data, std::size_t n, std::size_t half, T scale_value, const T* post) noexcept {
    using batch = xsimd::batch<T, Arch>;
    constexpr std::size_t lanes = batch::size, m = std::size_t{1} << Stages;
    const batch scale(scale_value);
    for (std::size_t base = 0; base < n; base += m * half) {
        for (std::size_t j = base; j < base + half; j += lanes) {
            batch a[m];
#pragma GCC unroll 16
            for (std::size_t t = 0; t < m; ++t) a[t] = batch::load_unaligned(data + j + t * half);
            butterflies<Stages>(a);
#pragma GCC unroll 16
            for (std::size_t t = 0; t < m; ++t) {
                batch v = a[t];
                if constexpr (Last) {
                    if constexpr (Scale) v = v * scale;
                    if (post != nullptr) v = v * batch::load_unaligned(post + j + t * half);
                }
                v.store_unaligned(data + j + t * half);
            }
        }
    }
}

// The +-1 lane patterns of the in-batch stages: stage k negates the lanes with bit k set.
template <class Arch, class T>
struct fwht_lane_signs {
    static constexpr std::size_t lanes = xsimd::batch<T, Arch>::size;
    static constexpr std::size_t stages = std::bit_width(lanes) - 1;
    xsimd::batch<T, Arch> v[stages > 0 ? stages : 1];
    fwht_lane_signs() noexcept {
        for (std::size_t stage = 0; stage < stages; ++stage) {
            alignas(Arch::alignment()) T pattern[lanes];
            for (std::size_t lane = 0; lane < lanes; ++lane) pattern[lane] = (lane >> stage) & 1U ? T(-1) : T(1);
            v[stage] = xsimd::batch<T, Arch>::load_aligned(pattern);
        }
    }
};

// Calls f(std::integral_constant<std::size_t, s>{}) for a pass of s = stages
// butterfly stages, 1 <= s <= 4.
template <class F>
inline void with_stage_count(std::size_t stages, F&& f) {
    switch (stages) {
        case 1:
            return f(std::integral_constant<std::size_t, 1>{});
        case 2:
            return f(std::integral_constant<std::size_t, 2>{});
        case 3:
            return f(std::integral_constant<std::size_t, 3>{});
        default:
            return f(std::integral_constant<std::size_t, 4>{});
    }
}

// The cross-batch stages half = first, ..., n / 2 (first >= lanes), up to
// four at a time (three with fewer than 32 vector registers: AVX-512 has 32,
// so 16 batches of a pass and their sums fit), each element loaded and
// stored once per pass; the last pass applies the scale (when Scale) and post.
template <bool Scale, class Arch, class T>
inline void fwht_passes(Arch, T* data, std::size_t n, std::size_t first, T scale_value, const T* post) noexcept {
    constexpr std::size_t max_stages = sizeof(xsimd::batch<T, Arch>) >= 64 ? 4 : 3;
    for (std::size_t half = first; half < n;) {
        std::size_t stages = 0;
        while (stages < max_stages && (half << stages) < n) ++stages;
        const bool last = (half << stages) == n;
        const auto run = [&](auto st) {
            if (last)
                fwht_pass<decltype(st)::value, true, Arch, T, Scale>(Arch{}, data, n, half, scale_value, post);
            else
                fwht_pass<decltype(st)::value, false, Arch, T, Scale>(Arch{}, data, n, half, scale_value, post);
        };
        with_stage_count(stages, run);
        half <<= stages;
    }
}

// SIMD body of the stages half = first .. n / 2, then (when Scale) times
// scale_value, then (post not null) times post[i]: each element meets the
// operations of the scalar bodies in their order. Lengths below one batch
// take the scalar body. The in-batch stages (half < lanes) run on each
// batch in registers; the rest run in fwht_passes, the scale and post in
// the last pass.
template <bool Scale, class Arch, class T>
inline void hadamard_stages_body(Arch, T* data, std::size_t n, std::size_t first, T scale_value,
                                 const T* post) noexcept {
    using batch = xsimd::batch<T, Arch>;
    constexpr std::size_t lanes = batch::size;
    if (n < lanes) {
        hadamard_stages_scalar<T>(data, n, first, nullptr);
        if constexpr (Scale)
            for (std::size_t i = 0; i < n; ++i) data[i] *= scale_value;
        if (post != nullptr)
            for (std::size_t i = 0; i < n; ++i) data[i] *= post[i];
        return;
    }
    const bool ends_in_register = first >= n || n == lanes;  // no cross-batch pass follows
    if (first < lanes || ends_in_register) {
        const fwht_lane_signs<Arch, T> signs;
        const batch scale(scale_value);
        for (std::size_t i = 0; i < n; i += lanes) {
            batch x = fwht_in_register_from<Arch, T>(batch::load_unaligned(data + i), signs.v, first);
            if (ends_in_register) {
                if constexpr (Scale) x = x * scale;
                if (post != nullptr) x = x * batch::load_unaligned(post + i);
            }
            x.store_unaligned(data + i);
        }
        first = std::max(first, lanes);
    }
    fwht_passes<Scale>(Arch{}, data, n, first, scale_value, post);
}

// The orthonormal transform (SIMD body of fwht_scalar; post: null or n values
// to multiply the result by, bit-identical to multiplying after the transform).
template <class Arch, class T>
inline void fwht_kernel(Arch, T* data, std::size_t n, const T* post = nullptr) noexcept {
    hadamard_stages_body<true>(Arch{}, data, n, 1, fwht_scale<T>(n), post);
}

// SIMD body of hadamard_stages_scalar, bit-identical to it.
template <class Arch, class T>
inline void hadamard_stages_kernel(Arch, T* data, std::size_t n, std::size_t first, const T* post) noexcept {
    hadamard_stages_body<false>(Arch{}, data, n, first, T(1), post);
}

template <class T>
inline void hadamard_stages(T* data, std::size_t n, std::size_t first, const T* post) noexcept {
    if constexpr (simd::has_simd) {
        hadamard_stages_kernel(simd::default_arch{}, data, n, first, post);
    } else {
        hadamard_stages_scalar(data, n, first, post);
    }
}

// Dispatch once: the SIMD body where xsimd found an architecture, else scalar.
// post: null, or n values the result is multiplied by (the signs of a rotation).
template <class T>
inline void fwht_dispatch(T* data, std::size_t n, const T* post = nullptr) noexcept {
    if constexpr (simd::has_simd) {
        fwht_kernel(simd::default_arch{}, data, n, post);
    } else {
        fwht_scalar(data, n);
        if (post != nullptr)
            for (std::size_t i = 0; i < n; ++i) data[i] *= post[i];
    }
}

inline void check_fwht_size(std::size_t n) {
    if (!std::has_single_bit(n)) {
        throw invalid_argument(fmt::format("fwht: length n={} is not a power of two", n));
    }
}

}  // namespace detail

// In-place orthonormal Walsh-Hadamard transform: data <- H_n data / sqrt(n).
// data: n floats, n a power of two (1, 2, 4, ...); throws svq::invalid_argument otherwise.
// Applying it twice gives back the input (up to rounding).
inline void fwht(std::span<float> data) {
    detail::check_fwht_size(data.size());
    detail::fwht_dispatch(data.data(), data.size());
}

// Same for doubles (used for Hessians). data: n doubles, n a power of two.
inline void fwht(std::span<double> data) {
    detail::check_fwht_size(data.size());
    detail::fwht_dispatch(data.data(), data.size());
}

}  // namespace svq
