#include <svq/io/quantized_file.hpp>  // files: target svq::io
#include <svq/svq.hpp>

#include <cstdio>
#include <random>
#include <vector>

int main() {
    const std::size_t rows = 256, cols = 1024;
    std::vector<float> w(rows * cols);  // a weight matrix, row-major
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (float& v : w) v = normal(rng);

    // The best PVQ configuration at <= 3.25 bits per weight, every stored bit counted.
    // (Options: .config for an explicit one, .hessian for the Hessian-weighted search, .threads.)
    const svq::quantized_matrix q = svq::quantize(w, rows, cols, {.target_bpw = 3.25});
    const std::vector<float> back = q.dequantize();
    std::printf("%s: %.4f bpw, SQNR %.2f dB\n", svq::to_string(q.config()).c_str(), q.bits_per_weight(),
                svq::sqnr_db(w, back));

    // y = Wq x straight from the packed words: the fused decode + GEMV (batched: gemv_batch).
    const svq::matrix_decoder decoder(q);
    std::vector<float> x(cols, 1.0f), y(rows);
    decoder.gemv(x, y);
    std::printf("y[0] = %.5f\n", y[0]);

    // Save it in a safetensors file (words, scale, configuration, checksums) and map it
    // back: the loaded matrix decodes and multiplies straight from the file's pages.
    svq::save("w.svq.safetensors", "layers.0.w", q);
    const svq::quantized_matrix loaded = svq::load("w.svq.safetensors").pvq("layers.0.w");
    std::printf("loaded from the file: %s\n", loaded.dequantize() == back ? "identical" : "DIFFERENT");
    return 0;
}
