// Fixed-width multi-word unsigned integer for PVQ indices.
//
// Pyramid sizes V(N, K) exceed 64 bits at useful (N, K): V(32, 50) needs 96
// bits, V(128, 187) 384 and V(256, 760) over 1000. Rank and unrank only add,
// subtract and compare; the rest (shifts, bit I/O, multiply and divide by a
// word, decimal text) is for tests, bitstreams and printing. Everything is
// constexpr; arithmetic wraps modulo 2^Bits like the built-in unsigned types,
// and the checked_* helpers report overflow instead.
#pragma once

#include <svq/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <compare>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace svq {

namespace detail {
// Double-word product and quotient helper (GCC and Clang; __extension__ keeps -Wpedantic quiet).
__extension__ typedef unsigned __int128 uint128;

// One word of a carry chain: returns a + b + carry_in mod 2^64, sets carry_out.
// On x86-64 the intrinsic compiles to adc (the portable form is ~3x slower
// in rank/unrank); constant evaluation takes the portable form.
constexpr std::uint64_t add_carry(std::uint64_t a, std::uint64_t b, unsigned char carry_in,
                                  unsigned char& carry_out) noexcept {
#if defined(__x86_64__)
    if (!std::is_constant_evaluated()) {
        unsigned long long r;
        carry_out = _addcarry_u64(carry_in, a, b, &r);
        return r;
    }
#endif
    const uint128 s = static_cast<uint128>(a) + b + carry_in;
    carry_out = static_cast<unsigned char>(s >> 64);
    return static_cast<std::uint64_t>(s);
}
// a - b - borrow_in mod 2^64, sets borrow_out.
constexpr std::uint64_t sub_borrow(std::uint64_t a, std::uint64_t b, unsigned char borrow_in,
                                   unsigned char& borrow_out) noexcept {
#if defined(__x86_64__)
    if (!std::is_constant_evaluated()) {
        unsigned long long r;
        borrow_out = _subborrow_u64(borrow_in, a, b, &r);
        return r;
    }
#endif
    const uint128 d = static_cast<uint128>(a) - b - borrow_in;
    borrow_out = static_cast<unsigned char>((d >> 64) & 1u);
    return static_cast<std::uint64_t>(d);
}
}  // namespace detail

template <std::size_t Bits>
class wide_uint {
    static_assert(Bits >= 64 && Bits % 64 == 0, "wide_uint: Bits must be a positive multiple of 64");

public:
    using limb_type = std::uint64_t;
    static constexpr std::size_t bits = Bits;
    static constexpr std::size_t limbs = Bits / 64;

    constexpr wide_uint() noexcept = default;
    constexpr wide_uint(std::unsigned_integral auto value) noexcept : limb_{} {  // NOLINT: implicit like built-ins
        limb_[0] = static_cast<limb_type>(value);
    }

    // The little-endian words (limb 0 is least significant).
    constexpr const std::array<limb_type, limbs>& words() const noexcept { return limb_; }
    constexpr std::array<limb_type, limbs>& words() noexcept { return limb_; }

    static constexpr wide_uint max() noexcept {
        wide_uint r;
        for (auto& w : r.limb_) w = ~limb_type{0};
        return r;
    }

    // --- comparison ------------------------------------------------------
    friend constexpr bool operator==(const wide_uint&, const wide_uint&) noexcept = default;
    friend constexpr std::strong_ordering operator<=>(const wide_uint& a, const wide_uint& b) noexcept {
        for (std::size_t i = limbs; i-- > 0;) {
            if (a.limb_[i] != b.limb_[i]) return a.limb_[i] <=> b.limb_[i];
        }
        return std::strong_ordering::equal;
    }

    constexpr bool is_zero() const noexcept {
        for (auto w : limb_)
            if (w != 0) return false;
        return true;
    }
    explicit constexpr operator bool() const noexcept { return !is_zero(); }

    // Number of significant bits (0 for zero), like std::bit_width.
    constexpr std::size_t bit_width() const noexcept {
        for (std::size_t i = limbs; i-- > 0;) {
            if (limb_[i] != 0) return i * 64 + static_cast<std::size_t>(std::bit_width(limb_[i]));
        }
        return 0;
    }

    constexpr bool bit(std::size_t i) const noexcept { return i < Bits && ((limb_[i / 64] >> (i % 64)) & 1u) != 0; }

    // True when the value fits in a std::uint64_t; low64() is then exact.
    constexpr bool fits_u64() const noexcept {
        for (std::size_t i = 1; i < limbs; ++i)
            if (limb_[i] != 0) return false;
        return true;
    }
    constexpr limb_type low64() const noexcept { return limb_[0]; }

    // --- addition / subtraction (wrapping, with carry reporting helpers) --
    // a += b; returns the carry out of the top word.
    constexpr bool add_with_carry(const wide_uint& b) noexcept {
        unsigned char carry = 0;
        for (std::size_t i = 0; i < limbs; ++i) limb_[i] = detail::add_carry(limb_[i], b.limb_[i], carry, carry);
        return carry != 0;
    }
    // a -= b; returns the borrow out of the top word.
    constexpr bool sub_with_borrow(const wide_uint& b) noexcept {
        unsigned char borrow = 0;
        for (std::size_t i = 0; i < limbs; ++i) limb_[i] = detail::sub_borrow(limb_[i], b.limb_[i], borrow, borrow);
        return borrow != 0;
    }
    // If a >= b: a -= b and true; else a unchanged and false. One pass over the
    // words: the enumeration's inner step ("is the index in this block?").
    // `used` words only: the caller guarantees both values are below 2^(64 used).
    constexpr bool try_sub(const wide_uint& b, std::size_t used = limbs) noexcept {
        std::array<limb_type, limbs> diff{};
        unsigned char borrow = 0;
        for (std::size_t i = 0; i < used; ++i) diff[i] = detail::sub_borrow(limb_[i], b.limb_[i], borrow, borrow);
        if (borrow != 0) return false;
        for (std::size_t i = 0; i < used; ++i) limb_[i] = diff[i];
        return true;
    }
    // a += b over the low `used` words (the caller guarantees the sum fits in them).
    constexpr void add_words(const wide_uint& b, std::size_t used) noexcept {
        unsigned char carry = 0;
        for (std::size_t i = 0; i < used; ++i) limb_[i] = detail::add_carry(limb_[i], b.limb_[i], carry, carry);
    }
    // Number of words up to the most significant non-zero one.
    constexpr std::size_t used_words() const noexcept {
        for (std::size_t i = limbs; i-- > 0;)
            if (limb_[i] != 0) return i + 1;
        return 0;
    }

    constexpr wide_uint& operator+=(const wide_uint& b) noexcept {
        add_with_carry(b);
        return *this;
    }
    constexpr wide_uint& operator-=(const wide_uint& b) noexcept {
        sub_with_borrow(b);
        return *this;
    }
    friend constexpr wide_uint operator+(wide_uint a, const wide_uint& b) noexcept { return a += b; }
    friend constexpr wide_uint operator-(wide_uint a, const wide_uint& b) noexcept { return a -= b; }

    constexpr wide_uint& operator++() noexcept { return *this += wide_uint(1u); }
    constexpr wide_uint& operator--() noexcept { return *this -= wide_uint(1u); }

    // --- multiply / divide by one word ------------------------------------
    // a *= m; returns the word that overflowed out of the top (0 when exact).
    constexpr limb_type mul_word(limb_type m) noexcept {
        limb_type carry = 0;
        for (std::size_t i = 0; i < limbs; ++i) {
            const detail::uint128 p = static_cast<detail::uint128>(limb_[i]) * m + carry;
            limb_[i] = static_cast<limb_type>(p);
            carry = static_cast<limb_type>(p >> 64);
        }
        return carry;
    }
    // a /= d (d != 0); returns the remainder.
    constexpr limb_type div_word(limb_type d) noexcept {
        detail::uint128 rem = 0;
        for (std::size_t i = limbs; i-- > 0;) {
            const detail::uint128 cur = (rem << 64) | limb_[i];
            limb_[i] = static_cast<limb_type>(cur / d);
            rem = cur % d;
        }
        return static_cast<limb_type>(rem);
    }

    // Full product modulo 2^Bits (schoolbook); used by tests and closed forms.
    friend constexpr wide_uint operator*(const wide_uint& a, const wide_uint& b) noexcept {
        wide_uint r;
        for (std::size_t i = 0; i < limbs; ++i) {
            limb_type carry = 0;
            for (std::size_t j = 0; i + j < limbs; ++j) {
                const detail::uint128 p =
                    static_cast<detail::uint128>(a.limb_[i]) * b.limb_[j] + r.limb_[i + j] + carry;
                r.limb_[i + j] = static_cast<limb_type>(p);
                carry = static_cast<limb_type>(p >> 64);
            }
        }
        return r;
    }

    // --- shifts -------------------------------------------------------------
    constexpr wide_uint& operator<<=(std::size_t s) noexcept {
        if (s >= Bits) return *this = wide_uint{};
        const std::size_t words = s / 64, rest = s % 64;
        for (std::size_t i = limbs; i-- > 0;) {
            limb_type v = 0;
            if (i >= words) {
                v = limb_[i - words] << rest;
                if (rest != 0 && i > words) v |= limb_[i - words - 1] >> (64 - rest);
            }
            limb_[i] = v;
        }
        return *this;
    }
    constexpr wide_uint& operator>>=(std::size_t s) noexcept {
        if (s >= Bits) return *this = wide_uint{};
        const std::size_t words = s / 64, rest = s % 64;
        for (std::size_t i = 0; i < limbs; ++i) {
            limb_type v = 0;
            if (i + words < limbs) {
                v = limb_[i + words] >> rest;
                if (rest != 0 && i + words + 1 < limbs) v |= limb_[i + words + 1] << (64 - rest);
            }
            limb_[i] = v;
        }
        return *this;
    }
    friend constexpr wide_uint operator<<(wide_uint a, std::size_t s) noexcept { return a <<= s; }
    friend constexpr wide_uint operator>>(wide_uint a, std::size_t s) noexcept { return a >>= s; }

    // --- bit I/O ------------------------------------------------------------
    // The `count` low bits starting at bit `first` (count <= 64).
    constexpr limb_type extract_bits(std::size_t first, std::size_t count) const noexcept {
        if (count == 0 || first >= Bits) return 0;
        const std::size_t w = first / 64, off = first % 64;
        limb_type v = limb_[w] >> off;
        if (off != 0 && w + 1 < limbs) v |= limb_[w + 1] << (64 - off);
        return count >= 64 ? v : (v & ((limb_type{1} << count) - 1));
    }
    // Overwrite `count` bits (<= 64) starting at bit `first` with the low bits of `value`.
    constexpr void deposit_bits(std::size_t first, std::size_t count, limb_type value) noexcept {
        for (std::size_t i = 0; i < count && first + i < Bits; ++i) {
            const std::size_t b = first + i;
            const limb_type mask = limb_type{1} << (b % 64);
            if ((value >> i) & 1u)
                limb_[b / 64] |= mask;
            else
                limb_[b / 64] &= ~mask;
        }
    }

    // --- text ---------------------------------------------------------------
    std::string to_string() const {
        if (is_zero()) return "0";
        constexpr limb_type chunk = 10'000'000'000'000'000'000ull;  // 10^19, the largest power of ten in a word
        std::array<limb_type, Bits / 60 + 2> parts{};
        std::size_t n = 0;
        wide_uint v = *this;
        while (!v.is_zero()) parts[n++] = v.div_word(chunk);
        std::string s = fmt::format("{}", parts[n - 1]);
        for (std::size_t i = n - 1; i-- > 0;) s += fmt::format("{:019}", parts[i]);
        return s;
    }

    // Parses decimal digits; throws svq::invalid_argument for bad characters
    // and svq::overflow_error when the value needs more than Bits bits.
    static wide_uint from_string(std::string_view text) {
        if (text.empty()) throw invalid_argument("wide_uint::from_string: empty string");
        wide_uint r;
        for (char c : text) {
            if (c < '0' || c > '9')
                throw invalid_argument(fmt::format("wide_uint::from_string: '{}' is not a decimal digit in \"{}\"", c, text));
            if (r.mul_word(10) != 0 || r.add_with_carry(wide_uint(static_cast<unsigned>(c - '0'))))
                throw overflow_error(fmt::format("wide_uint<{}>::from_string: \"{}\" needs more than {} bits", Bits, text, Bits));
        }
        return r;
    }

private:
    std::array<limb_type, limbs> limb_{};
};

// --- index-type traits: built-in unsigned integers and wide_uint alike ---------
namespace detail {
template <class T>
struct is_wide_uint : std::false_type {};
template <std::size_t B>
struct is_wide_uint<wide_uint<B>> : std::true_type {};
}  // namespace detail

// Number of bits an index type holds.
template <class T>
inline constexpr std::size_t index_bits_v = [] {
    if constexpr (detail::is_wide_uint<T>::value)
        return T::bits;
    else
        return sizeof(T) * 8;
}();

// Adds b to a; returns false (leaving a unspecified) when the sum does not fit.
template <class T>
constexpr bool checked_add(T& a, const T& b) noexcept {
    if constexpr (detail::is_wide_uint<T>::value) {
        return !a.add_with_carry(b);
    } else {
        return !__builtin_add_overflow(a, b, &a);
    }
}

// If a >= b: a -= b and true; else false with a unchanged. `used`: words
// that can be non-zero in a and b (wide types only; see wide_uint::try_sub).
template <class T>
constexpr bool try_sub(T& a, const T& b, [[maybe_unused]] std::size_t used = 1) noexcept {
    if constexpr (detail::is_wide_uint<T>::value) {
        return a.try_sub(b, used);
    } else {
        if (a < b) return false;
        a -= b;
        return true;
    }
}

// a += b where the sum fits in `used` words (wide types; built-ins ignore it).
template <class T>
constexpr void add_in_words(T& a, const T& b, [[maybe_unused]] std::size_t used = 1) noexcept {
    if constexpr (detail::is_wide_uint<T>::value)
        a.add_words(b, used);
    else
        a += b;
}

// Words of T that V may occupy (1 for built-ins).
template <class T>
constexpr std::size_t used_words_of(const T& v) noexcept {
    if constexpr (detail::is_wide_uint<T>::value)
        return v.used_words();
    else
        return 1;
}

template <class T>
constexpr std::size_t bit_width_of(const T& v) noexcept {
    if constexpr (detail::is_wide_uint<T>::value)
        return v.bit_width();
    else
        return static_cast<std::size_t>(std::bit_width(v));
}

template <class T>
std::string to_decimal(const T& v) {
    if constexpr (detail::is_wide_uint<T>::value)
        return v.to_string();
    else
        return fmt::format("{}", v);
}

// An index type: a built-in unsigned integer or a svq::wide_uint (the PVQ
// indices, pvq/count.hpp and the concepts of concepts.hpp).
template <class T>
concept IndexType = (std::unsigned_integral<T> && !std::same_as<T, bool>) || detail::is_wide_uint<T>::value;

}  // namespace svq

template <std::size_t Bits>
struct fmt::formatter<svq::wide_uint<Bits>> : fmt::formatter<std::string_view> {
    template <class FormatContext>
    auto format(const svq::wide_uint<Bits>& v, FormatContext& ctx) const {
        const std::string s = v.to_string();
        return fmt::formatter<std::string_view>::format(std::string_view(s), ctx);
    }
};
