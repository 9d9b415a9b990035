// libFuzzer harness: the PVQ row decoder (quantized_matrix, matrix_decoder) on arbitrary words (fuzz/harnesses.hpp).
#include "harnesses.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return svq::fuzz::run_harness(svq::fuzz::row_decoder, data, size);
}
