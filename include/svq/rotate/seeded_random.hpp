// Portable seeded randomness for the rotation: a stored 64-bit seed must give
// the same rotation on every platform and standard library, which rules out
// std::normal_distribution (libstdc++, libc++ and MSVC use different
// algorithms) and the unspecified std::*_distribution family in general.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>

namespace svq::detail {

// splitmix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
// generators", OOPSLA 2014): a 64-bit counter passed through a fixed mixing
// function. Integer arithmetic only, so the stream is identical everywhere.
class splitmix64 {
public:
    explicit constexpr splitmix64(std::uint64_t seed) noexcept : state_(seed) {}

    constexpr std::uint64_t next() noexcept {
        state_ += 0x9e3779b97f4a7c15ULL;
        std::uint64_t z = state_;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }

    // Uniform in the open interval (0, 1): the top 53 bits, centred in their
    // cell of width 2^-53, so log() below never sees 0.
    constexpr double next_open_unit() noexcept {
        return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53;
    }

private:
    std::uint64_t state_;
};

// Seed of independent stream number `stream` derived from a user seed: output
// `stream` of splitmix64(seed), computed directly (splitmix64's state after k
// steps is seed + k * increment).
constexpr std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) noexcept {
    splitmix64 generator(seed + stream * 0x9e3779b97f4a7c15ULL);
    return generator.next();
}

// Standard normal samples by the Box-Muller transform: from two uniforms
// u1, u2 in (0, 1), r = sqrt(-2 ln u1) and t = 2 pi u2 give two independent
// N(0, 1) values r cos t and r sin t, returned in that order. The uniform bits
// are portable exactly; the values go through the C library's log, cos and
// sin, which glibc, musl and MSVC round correctly in almost all cases, so two
// platforms agree to the last bit or, rarely, within one ulp.
class normal_sampler {
public:
    explicit constexpr normal_sampler(std::uint64_t seed) noexcept : bits_(seed) {}

    double next() noexcept {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        const double radius = std::sqrt(-2.0 * std::log(bits_.next_open_unit()));
        const double angle = 2.0 * std::numbers::pi * bits_.next_open_unit();
        spare_ = radius * std::sin(angle);
        has_spare_ = true;
        return radius * std::cos(angle);
    }

private:
    splitmix64 bits_;
    double spare_ = 0.0;
    bool has_spare_ = false;
};

}  // namespace svq::detail
