// libFuzzer harness: parse_npy (fuzz/harnesses.hpp).
#include "harnesses.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return svq::fuzz::run_harness(svq::fuzz::npy, data, size);
}
