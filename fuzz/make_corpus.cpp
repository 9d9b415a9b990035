// Writes the seed corpus of the fuzz harnesses (fuzz/corpus/<harness>/):
// valid files made with svq's own writers and a few damaged ones. Built as
// svq_fuzz_make_corpus, not run by ctest; its output is committed.
//
//   svq_fuzz_make_corpus <corpus directory>     (fuzz/corpus)
//
// Deterministic: the same svq gives the same files.
#include <svq/crvq/crvq.hpp>
#include <svq/io/npy.hpp>
#include <svq/io/quantized_file.hpp>
#include <svq/io/safetensors.hpp>
#include <svq/quantize.hpp>

#include "harnesses.hpp"
#include "../tests/support/method_zoo.hpp"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

using svq::test::gaussian;

std::size_t written = 0, total_bytes = 0;

void put(const fs::path& dir, const std::string& name, std::span<const std::byte> bytes) {
    fs::create_directories(dir);
    std::ofstream f(dir / name, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!f) throw svq::io_error("cannot write " + (dir / name).string());
    ++written;
    total_bytes += bytes.size();
}

std::vector<std::byte> truncated(std::vector<std::byte> b, std::size_t keep) {
    b.resize(std::min(keep, b.size()));
    return b;
}

// A safetensors file with header text `json` and `data_bytes` zero bytes of data.
std::vector<std::byte> raw_safetensors(const std::string& json, std::size_t data_bytes) {
    std::vector<std::byte> b(8 + json.size() + data_bytes, std::byte{0});
    const std::uint64_t n = json.size();
    std::memcpy(b.data(), &n, 8);
    std::memcpy(b.data() + 8, json.data(), json.size());
    return b;
}

// The header text of a safetensors file (for editing).
std::string header_text(std::span<const std::byte> b) {
    std::uint64_t n = 0;
    std::memcpy(&n, b.data(), 8);
    return std::string(reinterpret_cast<const char*>(b.data() + 8), n);
}
// The file with its header replaced by `json` (data kept).
std::vector<std::byte> with_header(std::span<const std::byte> b, const std::string& json) {
    std::uint64_t n = 0;
    std::memcpy(&n, b.data(), 8);
    std::vector<std::byte> out = raw_safetensors(json, 0);
    out.insert(out.end(), b.begin() + static_cast<std::ptrdiff_t>(8 + n), b.end());
    return out;
}
std::string replace_first(std::string s, const std::string& from, const std::string& to) {
    const std::size_t at = s.find(from);
    if (at != std::string::npos) s.replace(at, from.size(), to);
    return s;
}

// ---- safetensors ----
void safetensors_corpus(const fs::path& dir) {
    const std::vector<float> v = gaussian(6 * 5, 1);
    svq::safetensors_writer w;
    w.add_floats("a.f16", v, {6, 5}, svq::dtype::f16);
    w.add_floats("b.f32", v, {6, 5}, svq::dtype::f32);
    w.add_floats("c.bf16", v, {30}, svq::dtype::bf16);
    const std::uint8_t byte = 7;
    w.add("d.u8", svq::dtype::u8, {1}, std::as_bytes(std::span<const std::uint8_t>(&byte, 1)));
    const std::int64_t i64[2] = {-1, 42};
    w.add("e.i64", svq::dtype::i64, {2}, std::as_bytes(std::span<const std::int64_t>(i64)));
    const double f64[3] = {1.5, -2.0, 1e300};
    w.add("f.f64", svq::dtype::f64, {3}, std::as_bytes(std::span<const double>(f64)));
    w.add_floats("g.empty", std::vector<float>{}, {0, 4});  // zero elements: no memcpy from a null pointer
    w.set_metadata("note", "hello");
    w.set_metadata("format", "pt");
    const std::vector<std::byte> good = w.to_bytes();
    put(dir, "valid_mixed.safetensors", good);

    svq::safetensors_writer one;
    one.add_floats("x", std::vector<float>{1.0f, -2.0f}, {2});
    put(dir, "valid_one.safetensors", one.to_bytes());
    put(dir, "valid_empty.safetensors", raw_safetensors("{}", 0));
    put(dir, "valid_scalar.safetensors", raw_safetensors(R"({"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})", 4));

    put(dir, "truncated_data.safetensors", truncated(good, good.size() - 3));
    put(dir, "truncated_header.safetensors", truncated(good, 40));
    put(dir, "short.safetensors", truncated(good, 5));
    put(dir, "bad_json.safetensors", raw_safetensors(R"({"a": {"dtype":"F32",)", 0));
    put(dir, "not_object.safetensors", raw_safetensors("[1, 2]", 0));
    put(dir, "bad_offsets.safetensors", raw_safetensors(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4));
    put(dir, "overlap.safetensors",
        raw_safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12));
    put(dir, "gap.safetensors", raw_safetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8));
    put(dir, "huge_shape.safetensors",
        raw_safetensors(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4));
    put(dir, "bad_metadata.safetensors", raw_safetensors(R"({"__metadata__":{"k":1}})", 0));
    put(dir, "bad_dtype.safetensors", raw_safetensors(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8));
    std::vector<std::byte> past = raw_safetensors("{}", 0);
    past[0] = std::byte{200};
    put(dir, "length_past_end.safetensors", past);
}

// ---- npy ----
std::vector<std::byte> npy_bytes(const std::string& dict, unsigned major, std::span<const std::byte> data) {
    const std::size_t prefix = major == 1 ? 10 : 12;
    std::string header = dict;
    header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
    header += '\n';
    std::vector<std::byte> b(prefix + header.size());
    const unsigned char magic[] = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<unsigned char>(major), 0};
    std::memcpy(b.data(), magic, 8);
    if (major == 1) {
        const auto n = static_cast<std::uint16_t>(header.size());
        std::memcpy(b.data() + 8, &n, 2);
    } else {
        const auto n = static_cast<std::uint32_t>(header.size());
        std::memcpy(b.data() + 8, &n, 4);
    }
    std::memcpy(b.data() + prefix, header.data(), header.size());
    b.insert(b.end(), data.begin(), data.end());
    return b;
}

void npy_corpus(const fs::path& dir) {
    const std::vector<float> v = gaussian(3 * 4, 2);
    const auto f4 = std::as_bytes(std::span<const float>(v));
    const std::vector<std::byte> good = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", 1, f4);
    put(dir, "valid_f4.npy", good);
    put(dir, "valid_f4_1d.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (12,), }", 1, f4));
    put(dir, "valid_f4_3d.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 2), }", 1, f4));
    put(dir, "valid_scalar.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 1, f4.first(4)));
    put(dir, "valid_empty.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", 1, {}));
    {  // big-endian float64, Fortran order, version 2.0
        std::vector<std::byte> d;
        const double m[6] = {1.5, 4.0, -2.0, 5.5, 3.25, -6.0};
        for (const double x : m) {
            unsigned char e[8];
            std::memcpy(e, &x, 8);
            for (int k = 7; k >= 0; --k) d.push_back(static_cast<std::byte>(e[k]));
        }
        put(dir, "valid_f8_be_fortran_v2.npy", npy_bytes("{'descr': '>f8', 'fortran_order': True, 'shape': (2, 3), }", 2, d));
    }
    {  // float16, version 3.0, double quotes
        std::vector<std::uint16_t> h;
        for (const float x : v) h.push_back(svq::float_to_half(x));
        put(dir, "valid_f2_v3.npy",
            npy_bytes("{\"descr\": \"<f2\", \"fortran_order\": False, \"shape\": (4, 3), }", 3,
                      std::as_bytes(std::span<const std::uint16_t>(h))));
    }
    put(dir, "truncated_data.npy", truncated(good, good.size() - 1));
    put(dir, "truncated_header.npy", truncated(good, 30));
    put(dir, "bad_magic.npy", truncated(good, 7));
    std::vector<std::byte> i4 = good;
    std::memcpy(i4.data() + 10 + 11, "<i4", 3);
    put(dir, "int_dtype.npy", i4);
    std::vector<std::byte> v9 = good;
    v9[6] = std::byte{9};
    put(dir, "version9.npy", v9);
    put(dir, "unterminated.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4", 1, f4));
    put(dir, "huge_shape.npy",
        npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 1, f4));
    put(dir, "fortran_3d.npy", npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 2), }", 1, f4));
}

// ---- svq metadata: quantized files of each method ----
// One result of each method (tests/support/method_zoo.hpp, its small shape) and a plain tensor.
struct models : svq::test::method_zoo {
    models() : method_zoo(svq::test::small_zoo_shape()) {}
    std::vector<float> embedding = gaussian(4 * 6, 13);
};

void svq_corpus(const fs::path& dir, const models& m) {
    auto one = [&](const std::string& file, auto&& add) {
        svq::model_writer mw;
        add(mw);
        const std::vector<std::byte> b = mw.to_bytes();
        put(dir, file, b);
        return b;
    };
    const auto plain = one("pvq_plain.svq.safetensors", [&](svq::model_writer& w) { w.add("w", m.plain); });
    one("pvq_plain8.svq.safetensors", [&](svq::model_writer& w) { w.add("w", m.plain8); });
    one("pvq_hessian.svq.safetensors", [&](svq::model_writer& w) { w.add("w", m.hessian, "hessian"); });
    one("rtn.svq.safetensors", [&](svq::model_writer& w) { w.add("w", m.rtn); });
    const std::string k[] = {"w"};
    one("crvq_kmeans.svq.safetensors", [&](svq::model_writer& w) { w.add_crvq("books", m.ck, k); });
    one("crvq_pvq.svq.safetensors", [&](svq::model_writer& w) { w.add_crvq("books", m.cp, k); });
    const auto trellis = one("trellis.svq.safetensors", [&](svq::model_writer& w) { w.add("w", m.trellis); });
    const auto all = one("all_methods.svq.safetensors", [&](svq::model_writer& w) {
        w.add("plain", m.plain);
        w.add("hessian", m.hessian, "hessian");
        w.add("rtn", m.rtn);
        const std::string ks[] = {"crvq_k"}, ps[] = {"crvq_p"};
        w.add_crvq("books_k", m.ck, ks);
        w.add_crvq("books_p", m.cp, ps);
        w.add("trellis", m.trellis);
        w.add_tensor("embedding", m.embedding, {4, 6});
        w.add_tensor("norm", std::span<const float>(m.embedding).first(6), {6}, svq::dtype::bf16);
        w.set_metadata("model", "fuzz seed");
    });

    // Damaged: truncated, a flipped data byte (checksum), entries edited
    // (the header re-serialised so it stays a valid safetensors file).
    put(dir, "truncated.svq.safetensors", truncated(all, all.size() / 2));
    std::vector<std::byte> flip = plain;
    flip[flip.size() - 20] ^= std::byte{0x10};
    put(dir, "flipped_word.svq.safetensors", flip);
    const std::string h = header_text(plain);
    put(dir, "bad_version.svq.safetensors", with_header(plain, replace_first(h, R"("svq.version":"1")", R"("svq.version":"2")")));
    put(dir, "bad_config.svq.safetensors", with_header(plain, replace_first(h, R"(\"pulses\":20)", R"(\"pulses\":21)")));
    put(dir, "bad_json_entry.svq.safetensors", with_header(plain, replace_first(h, R"({\"method\")", R"({\"method)")));
    put(dir, "no_checksums.svq.safetensors", with_header(plain, replace_first(h, R"("svq.checksums")", R"("svq.checksumz")")));
    put(dir, "bad_group_dim.svq.safetensors", with_header(plain, replace_first(h, R"(\"group_dim\":16)", R"(\"group_dim\":40)")));
    const std::string t = header_text(trellis);
    put(dir, "trellis_bad_rate.svq.safetensors",
        with_header(trellis, replace_first(t, R"(\"bits_per_64\":200)", R"(\"bits_per_64\":320)")));
    put(dir, "trellis_bad_state_bits.svq.safetensors",
        with_header(trellis, replace_first(t, R"(\"state_bits\":8)", R"(\"state_bits\":3)")));
}

// ---- row decoder: header bytes (harnesses.hpp) + real payload words ----
void row_decoder_corpus(const fs::path& dir) {
    // (group_dim index, rotate, 8-bit scales, rows, pulses, gain_bits, cols)
    struct seed {
        unsigned dim_index;
        bool rotate, scale8;
        std::size_t rows, pulses;
        unsigned gain_bits;
        std::size_t cols;
    };
    static constexpr std::size_t dims[] = {4, 8, 16, 32};
    const seed seeds[] = {
        {0, false, false, 4, 6, 3, 10},   {1, true, false, 8, 12, 4, 32},  {2, false, true, 3, 20, 5, 40},
        {3, true, false, 2, 40, 6, 64},   {3, false, true, 5, 64, 8, 100}, {1, false, false, 1, 1, 1, 9},
        {2, true, true, 6, 30, 2, 48},    {0, true, false, 7, 9, 7, 16},
    };
    std::size_t i = 0;
    for (const seed& s : seeds) {
        const std::size_t n = dims[s.dim_index];
        std::byte h[svq::fuzz::row_decoder_header] = {};
        h[0] = static_cast<std::byte>(s.dim_index | (s.rotate ? 4u : 0u) | (s.scale8 ? 8u : 0u) | ((s.rows - 1) << 4));
        h[1] = static_cast<std::byte>(s.pulses - 1);
        h[2] = static_cast<std::byte>(s.gain_bits - 1);
        h[3] = static_cast<std::byte>(s.cols - n - 1);
        h[4] = static_cast<std::byte>(i);
        std::size_t rows = 0, cols = 0;
        float ref = 0.0f;
        svq::matrix_config c = svq::fuzz::row_decoder_config(h, rows, cols, ref);
        if (rows != s.rows || cols != s.cols || c.group_dim != n || c.pulses != s.pulses)
            throw svq::invalid_argument("make_corpus: row decoder seed does not round-trip");
        const std::vector<float> w = gaussian(rows * cols, 100 + i, 0.05f);
        const svq::quantized_matrix q = svq::quantize(w, rows, cols, c);
        ref = q.reference_scale();
        std::memcpy(h + 5, &ref, 4);
        std::vector<std::byte> b(h, h + sizeof h);
        const auto words = std::as_bytes(q.words());
        b.insert(b.end(), words.begin(), words.end());
        put(dir, fmt::format("valid_{}.bin", i), b);
        if (i == 1) {  // the same with a bad index, a short payload, bad reference scales
            std::vector<std::byte> bad = b;
            for (std::size_t k = sizeof h; k < bad.size(); ++k) bad[k] = std::byte{0xff};
            put(dir, "all_ones_words.bin", bad);
            put(dir, "short_payload.bin", truncated(b, sizeof h + 5));
            std::vector<std::byte> neg = b;
            const float minus = -1.0f, nan = std::numeric_limits<float>::quiet_NaN();
            std::memcpy(neg.data() + 5, &minus, 4);
            put(dir, "negative_ref.bin", neg);
            std::memcpy(neg.data() + 5, &nan, 4);
            put(dir, "nan_ref.bin", neg);
        }
        ++i;
    }
    put(dir, "empty.bin", std::span<const std::byte>{});
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <corpus directory>\n", argv[0]);
        return 2;
    }
    try {
        const fs::path root = argv[1];
        safetensors_corpus(root / "safetensors");
        npy_corpus(root / "npy");
        const models m;
        svq_corpus(root / "svq_metadata", m);
        row_decoder_corpus(root / "row_decoder");
        std::printf("%zu files, %zu bytes under %s\n", written, total_bytes, root.c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "make_corpus: %s\n", e.what());
        return 1;
    }
    return 0;
}
