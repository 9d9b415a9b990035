// libFuzzer harness: parse_safetensors_header and safetensors_file (fuzz/harnesses.hpp).
// Only the headers this harness needs (not quantized_file.hpp and CRVQ: a shorter build).
#define SVQ_FUZZ_NO_SVQ_FILE
#include "harnesses.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return svq::fuzz::run_harness(svq::fuzz::safetensors_header, data, size);
}
