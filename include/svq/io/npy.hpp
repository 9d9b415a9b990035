// NumPy .npy files of floats: read (float32, float16 or float64, either byte
// order, C or Fortran order) and write (float32, C order).
//
// A file is the magic "\x93NUMPY", a version byte pair (1.0: 2-byte header
// length; 2.0 and 3.0: 4-byte), the header length (little-endian), the header
// (a Python dict literal: {'descr': '<f4', 'fortran_order': False,
// 'shape': (rows, cols), } padded with spaces and a newline) and the
// elements. Anything else is svq::corrupt_data naming the file.
#pragma once

#include <svq/core/half.hpp>
#include <svq/error.hpp>
#include <svq/io/mapped_file.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace svq {

// An array read from a .npy file: its shape and elements in C order.
struct npy_array {
    std::vector<std::size_t> shape;
    std::vector<float> values;
};

namespace detail {

// The dict literal of a .npy header: keys and values as numpy writes them.
class npy_header_parser {
public:
    npy_header_parser(std::string_view text, const std::string& file) : s_(text), file_(file) {}

    void parse(std::string& descr, bool& fortran, std::vector<std::size_t>& shape) {
        bool seen_descr = false, seen_order = false, seen_shape = false;
        expect('{');
        while (true) {
            skip();
            if (peek() == '}') break;
            const std::string key = quoted();
            expect(':');
            skip();
            if (key == "descr") {
                descr = quoted();
                seen_descr = true;
            } else if (key == "fortran_order") {
                if (s_.substr(i_, 4) == "True") {
                    fortran = true;
                    i_ += 4;
                } else if (s_.substr(i_, 5) == "False") {
                    fortran = false;
                    i_ += 5;
                } else {
                    fail("fortran_order is not True or False");
                }
                seen_order = true;
            } else if (key == "shape") {
                shape = tuple();
                seen_shape = true;
            } else {
                fail(fmt::format("unknown key '{}'", key));
            }
            skip();
            if (peek() == ',') ++i_;
            else if (peek() != '}') fail("expected ',' or '}'");
        }
        ++i_;
        for (; i_ < s_.size(); ++i_)
            if (s_[i_] != ' ' && s_[i_] != '\n') fail("text after the dict");
        if (!seen_descr || !seen_order || !seen_shape) fail("the header lacks descr, fortran_order or shape");
    }

private:
    [[noreturn]] void fail(const std::string& what) const {
        throw corrupt_data(fmt::format("{}: .npy header at byte {}: {}", file_, i_, what));
    }
    char peek() const {
        if (i_ >= s_.size()) fail("unexpected end");
        return s_[i_];
    }
    void skip() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n')) ++i_;
    }
    void expect(char c) {
        skip();
        if (peek() != c) fail(fmt::format("expected '{}'", c));
        ++i_;
    }
    std::string quoted() {
        skip();
        const char q = peek();
        if (q != '\'' && q != '"') fail("expected a quoted string");
        const std::size_t start = ++i_;
        while (peek() != q) ++i_;
        return std::string(s_.substr(start, i_++ - start));
    }
    std::vector<std::size_t> tuple() {
        std::vector<std::size_t> out;
        expect('(');
        while (true) {
            skip();
            if (peek() == ')') break;
            if (peek() < '0' || peek() > '9') fail("a shape entry is not a non-negative integer");
            std::size_t v = 0;
            while (peek() >= '0' && peek() <= '9') {
                const auto d = static_cast<std::size_t>(s_[i_++] - '0');
                if (v > (static_cast<std::size_t>(-1) - d) / 10) fail("a shape entry overflows a size_t");
                v = v * 10 + d;
            }
            if (out.size() == 32) fail("more than 32 dimensions");
            out.push_back(v);
            skip();
            if (peek() == ',') ++i_;
            else if (peek() != ')') fail("expected ',' or ')' in the shape");
        }
        ++i_;
        return out;
    }

    std::string_view s_;
    const std::string& file_;
    std::size_t i_ = 0;
};

}  // namespace detail

// Parses a whole .npy file's bytes (`file` names it in errors).
inline npy_array parse_npy(std::span<const std::byte> bytes, const std::string& file) {
    static constexpr unsigned char magic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    if (bytes.size() < 10 || std::memcmp(bytes.data(), magic, 6) != 0)
        throw corrupt_data(fmt::format("{}: not a .npy file (no \\x93NUMPY magic)", file));
    const auto major = static_cast<unsigned>(bytes[6]);
    std::size_t header_len = 0, start = 0;
    if (major == 1) {
        std::uint16_t n;
        std::memcpy(&n, bytes.data() + 8, 2);
        header_len = n, start = 10;
    } else if (major == 2 || major == 3) {
        if (bytes.size() < 12) throw corrupt_data(fmt::format("{}: {} bytes, too short for a .npy header", file, bytes.size()));
        std::uint32_t n;
        std::memcpy(&n, bytes.data() + 8, 4);
        header_len = n, start = 12;
    } else {
        throw corrupt_data(fmt::format("{}: .npy version {}.{} (svq reads 1.0, 2.0 and 3.0)", file, major,
                                       static_cast<unsigned>(bytes[7])));
    }
    if (header_len > bytes.size() - start)
        throw corrupt_data(fmt::format("{}: .npy header length {} runs past the end ({} bytes)", file, header_len,
                                       bytes.size()));
    std::string descr;
    bool fortran = false;
    npy_array out;
    detail::npy_header_parser({reinterpret_cast<const char*>(bytes.data() + start), header_len}, file)
        .parse(descr, fortran, out.shape);

    if (descr.size() != 3 || (descr[0] != '<' && descr[0] != '>' && descr[0] != '|') || descr[1] != 'f' ||
        (descr[2] != '2' && descr[2] != '4' && descr[2] != '8'))
        throw corrupt_data(fmt::format("{}: dtype '{}' is not a float (svq reads f2, f4 and f8)", file, descr));
    const std::size_t item = static_cast<std::size_t>(descr[2] - '0');
    const bool swap = descr[0] == '>';
    std::size_t elements = 1;
    for (const std::size_t d : out.shape) {
        if (d != 0 && elements > static_cast<std::size_t>(-1) / d / item)
            throw corrupt_data(fmt::format("{}: shape ({}) has more bytes than a size_t holds", file, fmt::join(out.shape, ", ")));
        elements *= d;
    }
    const std::size_t data = start + header_len;
    if (bytes.size() - data != elements * item)
        throw corrupt_data(fmt::format("{}: {} bytes of data for shape ({}) of '{}' (need {})", file, bytes.size() - data,
                                       fmt::join(out.shape, ", "), descr, elements * item));
    if (fortran && out.shape.size() > 2)
        throw corrupt_data(fmt::format("{}: a Fortran-order array of {} dimensions (svq reads up to 2)", file,
                                       out.shape.size()));
    out.values.resize(elements);
    const std::byte* p = bytes.data() + data;
    for (std::size_t i = 0; i < elements; ++i) {
        unsigned char b[8];
        std::memcpy(b, p + i * item, item);
        if (swap)
            for (std::size_t k = 0; k < item / 2; ++k) std::swap(b[k], b[item - 1 - k]);
        float v;
        if (item == 2) {
            std::uint16_t h;
            std::memcpy(&h, b, 2);
            v = half_to_float(h);
        } else if (item == 4) {
            std::memcpy(&v, b, 4);
        } else {
            double d;
            std::memcpy(&d, b, 8);
            v = static_cast<float>(d);
        }
        out.values[i] = v;
    }
    if (fortran && out.shape.size() == 2) {  // column-major -> row-major
        const std::size_t rows = out.shape[0], cols = out.shape[1];
        std::vector<float> c(elements);
        for (std::size_t r = 0; r < rows; ++r)
            for (std::size_t k = 0; k < cols; ++k) c[r * cols + k] = out.values[k * rows + r];
        out.values = std::move(c);
    }
    return out;
}

// Reads a .npy file. Throws svq::io_error or svq::corrupt_data naming it.
inline npy_array read_npy(const std::filesystem::path& path) {
    const auto f = mapped_file::open(path, false);
    return parse_npy(f->bytes(), f->name());
}

// Writes values (C order, shape's product of them) as a float32 .npy file
// (version 1.0, header padded to 64 bytes as numpy does). Throws
// svq::invalid_argument for a count that does not match the shape,
// svq::io_error when the file cannot be written.
inline void write_npy(const std::filesystem::path& path, std::span<const float> values,
                      std::span<const std::size_t> shape) {
    std::size_t elements = 1;
    for (const std::size_t d : shape) elements *= d;
    if (elements != values.size())
        throw invalid_argument(fmt::format("write_npy: {} values for shape ({})", values.size(), fmt::join(shape, ", ")));
    std::string header = fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}{}), }}",
                                     fmt::join(shape, ", "), shape.size() == 1 ? "," : "");
    header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
    header += '\n';
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    if (!f) throw io_error(fmt::format("{}: cannot open for writing", path.string()));
    const char magic[] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
    const auto n = static_cast<std::uint16_t>(header.size());
    f.write(magic, 8);
    f.write(reinterpret_cast<const char*>(&n), 2);
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    f.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size_bytes()));
    if (!f) throw io_error(fmt::format("{}: write failed", path.string()));
}

}  // namespace svq
