// Must not compile: a gain quantizer family whose quantizer has no
// decode(code) does not make a ScaleQuantizer, so it is not GainQuantizers and
// the row format rejects it, naming the concept. With SVQ_COMPILE_FAIL_CONTROL
// defined the quantizer has decode and this compiles.
#include <svq/format/row_format.hpp>

#include <cstddef>
#include <cstdint>

namespace {

struct missing_decode {
    unsigned bits() const noexcept { return 1; }
    std::uint32_t encode(double) const noexcept { return 0; }
#ifdef SVQ_COMPILE_FAIL_CONTROL
    double decode(std::uint32_t) const noexcept { return 0.0; }
#endif
};

struct missing_decode_gains {
    missing_decode make(std::size_t, std::size_t, unsigned) const noexcept { return {}; }
};

}  // namespace

int main() {
    using format = svq::basic_row_format<svq::pvq_split_index, missing_decode_gains>;
    const format* f = nullptr;
    return f == nullptr ? 0 : 1;
}
