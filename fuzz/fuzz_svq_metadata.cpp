// libFuzzer harness: model_file (the svq metadata parser) and every matrix's decode (fuzz/harnesses.hpp).
#include "harnesses.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return svq::fuzz::run_harness(svq::fuzz::svq_metadata, data, size);
}
