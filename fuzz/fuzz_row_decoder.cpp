// libFuzzer harness: the PVQ row decoder (quantized_matrix, matrix_decoder) on arbitrary words (fuzz/harnesses.hpp).
// Only the headers this harness needs (not quantized_file.hpp and CRVQ: a shorter build).
#define SVQ_FUZZ_NO_SVQ_FILE
#include "harnesses.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return svq::fuzz::run_harness(svq::fuzz::row_decoder, data, size);
}
