// libFuzzer harness: parse_safetensors_header and safetensors_file (fuzz/harnesses.hpp).
#include "harnesses.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return svq::fuzz::run_harness(svq::fuzz::safetensors_header, data, size);
}
