// Helpers shared by the test files.
#pragma once

#include <svq/format/layout.hpp>

#include <cstddef>

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

}  // namespace svq::test
