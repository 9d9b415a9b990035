// Bit-packed storage: fields of 1..64 bits written back to back into 64-bit
// words, least significant bit first, readable at any bit offset (so a row of
// a quantized matrix decodes without touching the rows before it).
#pragma once

#include <svq/core/wide_uint.hpp>
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
    // Appends an index of `count` bits (any width the index type holds).
    template <class Index>
    void write_index(const Index& index, std::size_t count) {
        if constexpr (detail::is_wide_uint<Index>::value) {
            for (std::size_t done = 0; done < count; done += 64) {
                const std::size_t n = count - done < 64 ? count - done : 64;
                write(index.extract_bits(done, n), n);
            }
        } else {
            write(static_cast<std::uint64_t>(index), count);
        }
    }
    std::size_t bits() const noexcept { return bits_; }
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
    template <class Index>
    Index read_index(std::size_t bit_offset, std::size_t count) const noexcept {
        if constexpr (detail::is_wide_uint<Index>::value) {
            Index index;
            for (std::size_t done = 0; done < count; done += 64) {
                const std::size_t n = count - done < 64 ? count - done : 64;
                index.words()[done / 64] = read(bit_offset + done, n);
            }
            return index;
        } else {
            return static_cast<Index>(read(bit_offset, count));
        }
    }

private:
    std::span<const std::uint64_t> words_;
};

}  // namespace svq
