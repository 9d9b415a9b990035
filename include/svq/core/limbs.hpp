// Arithmetic on little-endian arrays of 64-bit words ("limbs"), the form in
// which the PVQ index tables (format/split_index.hpp) hold numbers of up to
// 1024 bits: compare, add, subtract, multiply and one division routine.
//
// Division is Knuth's algorithm D (TAOCP vol. 2, 4.3.1) over a divisor
// normalised once (shifted until its top word has its high bit set), with
// each quotient word estimated by a two-by-one division through a reciprocal
// of the divisor's top word (Moller and Granlund, "Improved division by
// invariant integers", 2011, algorithm 4). `divmod_normalized` is that routine;
// its sizes are template parameters where the caller knows them (the unrank
// hot path) and run-time values otherwise (0), with the same body.
// `limbs_divmod` normalises an arbitrary divisor and calls it.
#pragma once

#include <svq/core/wide_uint.hpp>  // uint128, add_carry, sub_borrow

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace svq::detail {

// Largest number of words a limb routine handles: 1024 bits plus one word.
inline constexpr std::size_t max_limbs = 17;

// floor((2^128 - 1) / d) - 2^64 for a normalised d (top bit set): the
// reciprocal of div_2by1_preinv.
inline std::uint64_t reciprocal_word(std::uint64_t d) noexcept {
    return static_cast<std::uint64_t>(~uint128{0} / d);  // the 2^64 term drops out modulo 2^64
}

// (u1 * 2^64 + u0) / d for a normalised d, u1 < d, v = reciprocal_word(d);
// the remainder in rem. Two multiplications and two corrections in place of
// the divide instruction.
inline std::uint64_t div_2by1_preinv(std::uint64_t u1, std::uint64_t u0, std::uint64_t d, std::uint64_t v,
                                     std::uint64_t& rem) noexcept {
    const uint128 p = static_cast<uint128>(v) * u1 + ((static_cast<uint128>(u1) << 64) | u0);
    auto q1 = static_cast<std::uint64_t>(p >> 64) + 1;
    const auto q0 = static_cast<std::uint64_t>(p);
    std::uint64_t r = u0 - q1 * d;
    const std::uint64_t mask = std::uint64_t{0} - static_cast<std::uint64_t>(r > q0);  // about half the time: no branch
    q1 += mask;
    r += mask & d;
    if (r >= d) {  // rare
        ++q1;
        r -= d;
    }
    rem = r;
    return q1;
}

// x >> (64 - s) and x << (64 - s) for 0 <= s < 64 (0 when s = 0), without a branch.
inline std::uint64_t shr_complement(std::uint64_t x, int s) noexcept { return (x >> 1) >> (63 - s); }
inline std::uint64_t shl_complement(std::uint64_t x, int s) noexcept { return (x << 1) << (63 - s); }

// a < b over W words, branch-free (the borrow of a - b).
template <std::size_t W>
inline bool fixed_less(const std::uint64_t* a, const std::uint64_t* b) noexcept {
    unsigned char borrow = 0;
    for (std::size_t i = 0; i < W; ++i) static_cast<void>(sub_borrow(a[i], b[i], borrow, borrow));
    return borrow != 0;
}

// Calls f(std::integral_constant<std::size_t, D>{}) for the D in [Lo, Hi]
// equal to n (run-time size -> code with the size fixed); false when none is.
template <std::size_t Lo, std::size_t Hi, class F>
inline bool with_fixed_size(std::size_t n, F&& f) noexcept {
    if constexpr (Lo > Hi) {
        return false;
    } else {
        if (n == Lo) {
            f(std::integral_constant<std::size_t, Lo>{});
            return true;
        }
        return with_fixed_size<Lo + 1, Hi>(n, std::forward<F>(f));
    }
}

// The division: num (ln words) / d (ld words, 1 <= ld <= ln <= max_limbs - 1),
// given as its normalised words vn (d << s, top word's high bit set), the
// shift s and v = reciprocal_word(vn[ld - 1]) -> q (ln words), r (ld words).
// LN, LD: the sizes fixed at compile time, or 0 for the run-time ln, ld.
template <std::size_t LN = 0, std::size_t LD = 0>
inline void divmod_normalized(const std::uint64_t* num, std::size_t ln, const std::uint64_t* vn, std::size_t ld, int s,
                              std::uint64_t v, std::uint64_t* q, std::uint64_t* r) noexcept {
    static_assert(LD <= LN || LN == 0);
    if constexpr (LN != 0) ln = LN;
    if constexpr (LD != 0) ld = LD;
    std::uint64_t u[(LN != 0 ? LN : max_limbs) + 1];
    u[ln] = shr_complement(num[ln - 1], s);
    for (std::size_t i = ln - 1; i > 0; --i) u[i] = (num[i] << s) | shr_complement(num[i - 1], s);
    u[0] = num[0] << s;
    const std::uint64_t vtop = vn[ld - 1];
    for (std::size_t i = ln - ld + 1; i < ln; ++i) q[i] = 0;
    const bool one_word = LD != 0 ? LD == 1 : ld == 1;
    if (one_word) {
        std::uint64_t rem = u[ln];  // < vtop: the shift left room for it
        for (std::size_t i = ln; i-- > 0;) {
            if (rem == 0 && u[i] < vtop) {  // a zero quotient word (the top ones, usually): no multiplication
                q[i] = 0;
                rem = u[i];
            } else {
                q[i] = div_2by1_preinv(rem, u[i], vtop, v, rem);
            }
        }
        r[0] = rem >> s;
        return;
    }
    const std::uint64_t vnext = vn[ld - 2];
    for (std::size_t j = ln - ld + 1; j-- > 0;) {
        if (u[j + ld] == 0 && u[j + ld - 1] < vtop) {  // quotient word zero (the top ones, usually)
            q[j] = 0;
            continue;
        }
        std::uint64_t qhat, rhat;
        bool rhat_big = false;
        if (u[j + ld] >= vtop) {  // only equality is possible
            qhat = ~std::uint64_t{0};
            rhat = u[j + ld - 1] + vtop;
            rhat_big = rhat < vtop;
        } else {
            qhat = div_2by1_preinv(u[j + ld], u[j + ld - 1], vtop, v, rhat);
        }
        while (!rhat_big && static_cast<uint128>(qhat) * vnext > ((static_cast<uint128>(rhat) << 64) | u[j + ld - 2])) {
            --qhat;
            rhat += vtop;
            rhat_big = rhat < vtop;
        }
        std::uint64_t carry = 0;
        unsigned char borrow = 0;
        for (std::size_t i = 0; i < ld; ++i) {
            const uint128 p = static_cast<uint128>(qhat) * vn[i] + carry;
            carry = static_cast<std::uint64_t>(p >> 64);
            u[i + j] = sub_borrow(u[i + j], static_cast<std::uint64_t>(p), borrow, borrow);
        }
        unsigned char b2 = 0;
        u[j + ld] = sub_borrow(u[j + ld], carry, borrow, b2);
        if (b2 != 0) {  // qhat was one too large (probability ~2^-64): add the divisor back
            --qhat;
            unsigned char c = 0;
            for (std::size_t i = 0; i < ld; ++i) u[i + j] = add_carry(u[i + j], vn[i], c, c);
            u[j + ld] += c;
        }
        q[j] = qhat;
    }
    for (std::size_t i = 0; i < ld; ++i) r[i] = (u[i] >> s) | shl_complement(u[i + 1], s);
}

// Number of words up to the most significant non-zero one.
inline std::size_t limbs_used(const std::uint64_t* a, std::size_t n) noexcept {
    while (n > 0 && a[n - 1] == 0) --n;
    return n;
}

// a < b over n words.
inline bool limbs_less(const std::uint64_t* a, const std::uint64_t* b, std::size_t n) noexcept {
    for (std::size_t i = n; i-- > 0;)
        if (a[i] != b[i]) return a[i] < b[i];
    return false;
}

// a -= b over n words (a >= b).
inline void limbs_sub(std::uint64_t* a, const std::uint64_t* b, std::size_t n) noexcept {
    unsigned char borrow = 0;
    for (std::size_t i = 0; i < n; ++i) a[i] = sub_borrow(a[i], b[i], borrow, borrow);
}

// a += b over n words (carry out of word n - 1 dropped: the caller knows the sum fits).
inline void limbs_add(std::uint64_t* a, const std::uint64_t* b, std::size_t n) noexcept {
    unsigned char carry = 0;
    for (std::size_t i = 0; i < n; ++i) a[i] = add_carry(a[i], b[i], carry, carry);
}

// a += b; a: na words, b: nb <= na words (carry out of word na - 1 dropped).
inline void limbs_add_short(std::uint64_t* a, std::size_t na, const std::uint64_t* b, std::size_t nb) noexcept {
    unsigned char carry = 0;
    std::size_t i = 0;
    for (; i < nb; ++i) a[i] = add_carry(a[i], b[i], carry, carry);
    for (; i < na && carry != 0; ++i) a[i] = add_carry(a[i], 0, carry, carry);
}

// out = a * b modulo 2^(64 lo); a: la words, b: lb words, out: lo words (not aliasing a or b).
inline void limbs_mul(const std::uint64_t* a, std::size_t la, const std::uint64_t* b, std::size_t lb,
                      std::uint64_t* out, std::size_t lo) noexcept {
    std::fill_n(out, lo, std::uint64_t{0});
    for (std::size_t i = 0; i < la && i < lo; ++i) {
        if (a[i] == 0) continue;
        std::uint64_t carry = 0;
        std::size_t j = 0;
        for (; j < lb && i + j < lo; ++j) {
            const uint128 p = static_cast<uint128>(a[i]) * b[j] + out[i + j] + carry;
            out[i + j] = static_cast<std::uint64_t>(p);
            carry = static_cast<std::uint64_t>(p >> 64);
        }
        for (std::size_t t = i + j; t < lo && carry != 0; ++t) {
            const uint128 s = static_cast<uint128>(out[t]) + carry;
            out[t] = static_cast<std::uint64_t>(s);
            carry = static_cast<std::uint64_t>(s >> 64);
        }
    }
}

// num (ln words) / den (ld words, den != 0, ln, ld < max_limbs) -> q (lq >= ln
// words, high words zeroed), r (ld words): normalises den and calls
// divmod_normalized.
inline void limbs_divmod(const std::uint64_t* num, std::size_t ln, const std::uint64_t* den, std::size_t ld,
                         std::uint64_t* q, std::size_t lq, std::uint64_t* r) noexcept {
    const std::size_t ld_full = ld;
    ld = limbs_used(den, ld);
    ln = limbs_used(num, ln);
    std::fill_n(q, lq, std::uint64_t{0});
    std::fill_n(r, ld_full, std::uint64_t{0});
    if (ln < ld || (ln == ld && limbs_less(num, den, ld))) {
        std::copy_n(num, ln, r);
        return;
    }
    const int s = std::countl_zero(den[ld - 1]);
    std::array<std::uint64_t, max_limbs> vn{};
    for (std::size_t i = ld; i-- > 0;) vn[i] = (den[i] << s) | (i > 0 ? shr_complement(den[i - 1], s) : 0);
    divmod_normalized(num, ln, vn.data(), ld, s, reciprocal_word(vn[ld - 1]), q, r);
}

}  // namespace svq::detail
