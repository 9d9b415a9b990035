// Bit-packed storage: fields of 1..64 bits written back to back into 64-bit
// words, least significant bit first, readable at any bit offset (so a row of
// a quantized matrix decodes without touching the rows before it).
#pragma once

#include <svq/error.hpp>

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace svq {

class bit_writer {
public:
    // Appends the low `count` bits of value (count 0..64).
    void write(std::uint64_t value, std::size_t count) {
        if (count == 0) return;
        if (count < 64) value &= (std::uint64_t{1} << count) - 1;
        const std::size_t offset = bits_ % 64;
        if (offset == 0) words_.push_back(0);
        words_.back() |= value << offset;
        if (offset != 0 && offset + count > 64) words_.push_back(value >> (64 - offset));
        bits_ += count;
    }
    // Appends a number of `count` bits held in little-endian 64-bit words
    // (ceil(count / 64) of them are read).
    void write_limbs(const std::uint64_t* limbs, std::size_t count) {
        for (std::size_t done = 0; done < count; done += 64) write(limbs[done / 64], count - done < 64 ? count - done : 64);
    }
    std::size_t bits() const noexcept { return bits_; }
    // Room for `words` words in all, so a stream of known length is written
    // without a reallocation (each would copy and fault in a larger buffer).
    void reserve_words(std::size_t words) { words_.reserve(words); }
    std::vector<std::uint64_t> take() && { return std::move(words_); }

private:
    std::vector<std::uint64_t> words_;
    std::size_t bits_ = 0;
};

// Reads fields from words written by bit_writer. Offsets are not checked on
// the hot path; the owner of the words validates sizes once.
class bit_reader {
public:
    explicit bit_reader(std::span<const std::uint64_t> words) noexcept : words_(words) {}

    std::uint64_t read(std::size_t bit_offset, std::size_t count) const noexcept {
        if (count == 0) return 0;
        const std::size_t w = bit_offset / 64, off = bit_offset % 64;
        std::uint64_t v = words_[w] >> off;
        if (off != 0 && off + count > 64) v |= words_[w + 1] << (64 - off);
        return count == 64 ? v : (v & ((std::uint64_t{1} << count) - 1));
    }
    // A number of `count` bits into `limbs` little-endian words (the words
    // above count are zeroed).
    void read_limbs(std::size_t bit_offset, std::size_t count, std::uint64_t* out, std::size_t limbs) const noexcept {
        for (std::size_t t = 0; t < limbs; ++t) {
            const std::size_t done = 64 * t;
            out[t] = done < count ? read(bit_offset + done, count - done < 64 ? count - done : 64) : 0;
        }
    }

private:
    std::span<const std::uint64_t> words_;
};

}  // namespace svq
