// Helpers shared by the test files.
#pragma once

#include <svq/format/layout.hpp>

#include <cstddef>
#include <filesystem>
#include <string>
#include <system_error>

namespace svq::test {

// A matrix configuration given in full (the seed and search options stay at their defaults).
inline matrix_config explicit_config(std::size_t n, std::size_t k, unsigned gain_bits, unsigned scale_bits,
                                     bool rotate) {
    matrix_config c;
    c.group_dim = n;
    c.pulses = k;
    c.gain_bits = gain_bits;
    c.row_scale_bits = scale_bits;
    c.rotate = rotate;
    return c;
}

// A fresh directory svq_test_<name> in the system's temp directory, removed
// with its contents at the end of the scope; dir / "file" is a path in it.
struct temp_dir {
    std::filesystem::path path;
    explicit temp_dir(const std::string& name) : path(std::filesystem::temp_directory_path() / ("svq_test_" + name)) {
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    std::string operator/(const std::string& file) const { return (path / file).string(); }
};

}  // namespace svq::test
