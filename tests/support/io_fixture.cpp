// Test support for the python_reader test (tests/python/read_safetensors.py):
// writes <dir>/model.safetensors with one matrix of every method (PVQ plain and
// Hessian-searched, RTN, CRVQ with a k-means and with a PVQ base, trellis) and plain
// tensors in F32, F16 and BF16, then what an independent reader must find:
//   <dir>/manifest.json   every matrix's parts (tensor name, dtype, shape)
//                         derived here from the matrices' configurations, the
//                         plain tensors with their dtype, shape and .npy file,
//                         the RTN matrices' .npy file, and xxh64 test vectors
//                         computed by svq::xxh64;
//   <dir>/<name>.npy      a plain tensor's values as svq reads them (float32),
//                         an RTN or trellis matrix dequantized.
// Part of svq_tests: the hidden case below, <dir> from SVQ_PYTHON_READER_DIR.
#include <svq/crvq/crvq.hpp>
#include <svq/io/npy.hpp>
#include <svq/io/quantized_file.hpp>
#include <svq/quantize.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "catch.hpp"
#include "method_zoo.hpp"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace {

using svq::test::gaussian;

using json = nlohmann::ordered_json;

json part(const std::string& tensor, svq::dtype type, std::vector<std::size_t> shape) {
    return {{"tensor", tensor}, {"dtype", svq::dtype_name(type)}, {"shape", std::move(shape)}};
}

// The parts a PVQ matrix stored under `prefix` has, from its layout.
void pvq_parts(json& parts, const std::string& prefix, const svq::quantized_matrix& q) {
    parts.push_back(part(prefix + "words", svq::dtype::u64, {q.layout().payload_words()}));
    parts.push_back(part(prefix + "reference_scale", svq::dtype::f32, {1}));
}

template <class B>
json crvq_parts(const std::string& name, const svq::crvq_matrix<B>& m) {
    const std::string prefix = name + ".svq.";
    json parts = json::array();
    parts.push_back(part(prefix + "reference_scale", svq::dtype::f32, {1}));
    if (m.row_scale_bits() != 0)
        parts.push_back(part(prefix + "row_scale_codes", svq::detail::code_dtype(m.row_scale_bits()), {m.rows()}));
    parts.push_back(part(prefix + "permutation", svq::dtype::u32, {m.permutation().size()}));
    const auto& books = m.codebooks();
    const std::size_t de = books.extended.front().dim();
    parts.push_back(part(prefix + "extended_codes", svq::detail::code_dtype(books.extended.front().code_bits()),
                         {m.critical_channels() * ((m.rows() + de - 1) / de) * books.extended.size()}));
    if constexpr (std::same_as<B, svq::kmeans_base>) {
        const std::size_t d = books.base->dim();
        parts.push_back(part(prefix + "base_codes", svq::detail::code_dtype(books.base->code_bits()),
                             {m.rows() * ((m.cols() + d - 1) / d)}));
    } else {
        pvq_parts(parts, prefix + "base.", m.base_part());
    }
    return parts;
}

template <class B>
json codebook_parts(const std::string& name, const svq::crvq_codebooks<B>& books) {
    json parts = json::array();
    if constexpr (std::same_as<B, svq::kmeans_base>)
        parts.push_back(part(name + ".svq.base_codebook", svq::dtype::f16, {books.base->entries(), books.base->dim()}));
    for (std::size_t i = 0; i < books.extended.size(); ++i)
        parts.push_back(part(fmt::format("{}.svq.extended.{}", name, i), svq::dtype::f16,
                             {books.extended[i].entries(), books.extended[i].dim()}));
    return parts;
}

int run(const std::filesystem::path& dir) {
    std::filesystem::create_directories(dir);
    const svq::test::method_zoo zoo;
    const std::size_t rows = zoo.rows, cols = zoo.cols;
    const svq::quantized_matrix &plain = zoo.plain, &plain8 = zoo.plain8, &hessian = zoo.hessian;
    const svq::rtn_matrix& rtn = zoo.rtn;
    const svq::crvq_model<svq::kmeans_base>& ck = zoo.ck;
    const svq::crvq_model<svq::pvq_base>& cp = zoo.cp;

    // Plain tensors; the F16 one holds values F16 rounds, the BF16 one a wide range.
    const std::vector<float> f32 = gaussian(10 * 6, 13);
    std::vector<float> f16 = gaussian(3 * 5 * 4, 14, 100.0f);
    f16[0] = 65504.0f;
    f16[1] = -6.0e-8f;  // subnormal in F16
    f16[2] = 0.0f;
    std::vector<float> bf16 = gaussian(7 * 9, 15, 1.0e6f);
    bf16[0] = 3.0e38f;
    bf16[1] = -1.0e-30f;

    const std::filesystem::path file = dir / "model.safetensors";
    {
        svq::model_writer mw;
        mw.add("layers.0.plain", plain);
        mw.add("layers.0.plain8", plain8);
        mw.add("layers.0.hessian", hessian, "hessian");
        mw.add("layers.0.rtn", rtn);
        const std::string k[] = {"layers.1.crvq_k"}, p[] = {"layers.1.crvq_p"};
        mw.add_crvq("books_k", ck, k);
        mw.add_crvq("books_p", cp, p);
        mw.add("layers.2.trellis", zoo.trellis);
        mw.add_tensor("embedding", f32, {10, 6});
        mw.add_tensor("norm.f16", f16, {3, 5, 4}, svq::dtype::f16);
        mw.add_tensor("lm_head.bf16", bf16, {7, 9}, svq::dtype::bf16);
        mw.set_metadata("source", "svq io_fixture");
        mw.write(file);
    }

    json m = {{"file", "model.safetensors"}};
    json matrices = json::object();
    auto pvq_entry = [&](const std::string& name, const svq::quantized_matrix& q, const char* search) {
        json parts = json::array();
        pvq_parts(parts, name + ".svq.", q);
        matrices[name] = {{"method", "pvq"}, {"search", search}, {"shape", {q.rows(), q.cols()}}, {"parts", parts}};
    };
    pvq_entry("layers.0.plain", plain, "mse");
    pvq_entry("layers.0.plain8", plain8, "mse");
    pvq_entry("layers.0.hessian", hessian, "hessian");
    matrices["layers.0.rtn"] = {
        {"method", "rtn"},
        {"shape", {rows, cols}},
        {"parts", {part("layers.0.rtn.svq.codes", svq::dtype::i8, {rows, cols}),
                   part("layers.0.rtn.svq.scales", svq::dtype::f16, {rows, rtn.groups_per_row()})}},
        {"expected", "layers.0.rtn.npy"}};
    matrices["books_k"] = {{"method", "crvq_codebooks"}, {"parts", codebook_parts("books_k", *ck.codebooks)}};
    matrices["books_p"] = {{"method", "crvq_codebooks"}, {"parts", codebook_parts("books_p", *cp.codebooks)}};
    matrices["layers.1.crvq_k"] = {{"method", "crvq"},
                                   {"shape", {rows, cols}},
                                   {"parts", crvq_parts("layers.1.crvq_k", ck.matrices[0])}};
    matrices["layers.1.crvq_p"] = {{"method", "crvq"},
                                   {"shape", {rows, cols}},
                                   {"parts", crvq_parts("layers.1.crvq_p", cp.matrices[0])}};
    matrices["layers.2.trellis"] = {
        {"method", "trellis"},
        {"shape", {rows, cols}},
        {"parts", {part("layers.2.trellis.svq.payload", svq::dtype::u8, {zoo.trellis.layout().payload_bytes}),
                   part("layers.2.trellis.svq.factors", svq::dtype::bf16, {rows})}},
        {"expected", "layers.2.trellis.npy"}};
    m["matrices"] = matrices;

    // Expected values: what svq itself reads back.
    const svq::model_file f = svq::load(file);
    json plain_tensors = json::object();
    auto plain_entry = [&](const std::string& name, svq::dtype type, std::vector<std::size_t> shape) {
        const std::vector<float> v = f.tensor(name);
        svq::write_npy(dir / (name + ".npy"), v, shape);
        plain_tensors[name] = {{"dtype", svq::dtype_name(type)}, {"shape", shape}, {"expected", name + ".npy"}};
    };
    plain_entry("embedding", svq::dtype::f32, {10, 6});
    plain_entry("norm.f16", svq::dtype::f16, {3, 5, 4});
    plain_entry("lm_head.bf16", svq::dtype::bf16, {7, 9});
    m["tensors"] = plain_tensors;
    const std::vector<float> rtn_values = f.rtn("layers.0.rtn").dequantize();
    const std::size_t rtn_shape[] = {rows, cols};
    svq::write_npy(dir / "layers.0.rtn.npy", rtn_values, rtn_shape);
    svq::write_npy(dir / "layers.2.trellis.npy", f.trellis("layers.2.trellis").dequantize(), rtn_shape);

    // xxh64 test vectors (svq::xxh64): inputs of every length class of the algorithm.
    json vectors = json::array();
    for (const std::size_t n : {0, 1, 3, 4, 8, 31, 32, 33, 100, 1000}) {
        std::vector<std::byte> b(n);
        for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::byte>((i * 131 + 7) & 0xff);
        vectors.push_back({{"length", n}, {"pattern", "(i * 131 + 7) mod 256"}, {"xxh64", svq::xxh64_hex(b)}});
    }
    m["xxh64_vectors"] = vectors;

    std::ofstream out(dir / "manifest.json");
    out << m.dump(2) << '\n';
    if (!out) throw svq::io_error(fmt::format("{}: write failed", (dir / "manifest.json").string()));
    fmt::print("wrote {} and its manifest in {}\n", file.string(), dir.string());
    return 0;
}

}  // namespace

// ctest's python_reader_fixture runs this case (hidden: not part of a plain
// run of svq_tests) with the output directory in SVQ_PYTHON_READER_DIR.
TEST_CASE("python reader fixture: the file and its manifest", "[.python_fixture]") {
    const char* dir = std::getenv("SVQ_PYTHON_READER_DIR");
    REQUIRE(dir != nullptr);
    REQUIRE(run(dir) == 0);
}
