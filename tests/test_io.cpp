// Files: the safetensors reader and writer, .npy, and quantized matrices of
// every method saved and loaded (bit-identical decode, mapped words, typed
// errors for every kind of damage, 10,000 single-byte corruptions).
#include <svq/crvq/crvq.hpp>
#include <svq/io/checkpoint.hpp>
#include <svq/io/npy.hpp>
#include <svq/io/quantized_file.hpp>
#include <svq/io/safetensors.hpp>
#include <svq/kernels/gemv.hpp>
#include <svq/quantize.hpp>

#include "catch.hpp"
#include "support.hpp"
#include "support/method_zoo.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

using svq::test::gaussian;

// A fresh directory under the system's temporary one, removed at the end.
using svq::test::temp_dir;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

svq::safetensors_file parse(const std::vector<std::byte>& bytes, const std::string& name = "t.safetensors") {
    return svq::safetensors_file(svq::mapped_file::from_bytes(bytes, name));
}

// A file's bytes with header text `json` (no data beyond `data`).
std::vector<std::byte> raw_file(const std::string& json, std::size_t data_bytes) {
    std::vector<std::byte> b(8 + json.size() + data_bytes, std::byte{0});
    const std::uint64_t n = json.size();
    std::memcpy(b.data(), &n, 8);
    std::memcpy(b.data() + 8, json.data(), json.size());
    return b;
}

}  // namespace

TEST_CASE("safetensors: floats round-trip in F32, F16 and BF16, aligned, with metadata", "[io]") {
    const std::vector<float> v = gaussian(6 * 5, 1);
    svq::safetensors_writer w;
    w.add_floats("a.f16", v, {6, 5}, svq::dtype::f16);
    w.add_floats("b.f32", v, {6, 5}, svq::dtype::f32);
    w.add_floats("c.bf16", v, {30}, svq::dtype::bf16);
    const std::uint8_t byte = 7;
    w.add("d.u8", svq::dtype::u8, {1}, std::as_bytes(std::span<const std::uint8_t>(&byte, 1)));
    w.set_metadata("note", "hello");
    const svq::safetensors_file f = parse(w.to_bytes());
    REQUIRE(f.tensors().size() == 4);
    CHECK(*f.metadata("note") == "hello");
    CHECK(f.at("a.f16").shape == std::vector<std::size_t>{6, 5});
    CHECK(same_bits(f.to_float("b.f32"), v));
    const std::vector<float> h = f.to_float("a.f16"), bf = f.to_float("c.bf16");
    for (std::size_t i = 0; i < v.size(); ++i) {
        CHECK(h[i] == svq::half_to_float(svq::float_to_half(v[i])));
        CHECK(std::fabs(bf[i] - v[i]) <= std::fabs(v[i]) * (1.0f / 256.0f));  // 8 significant bits
    }
    // Every tensor starts at a multiple of its element size in the file.
    for (const svq::tensor_info& t : f.tensors())
        CHECK(reinterpret_cast<std::uintptr_t>(f.data(t).data()) % svq::dtype_size(t.type) == 0);
    REQUIRE_THROWS_AS(f.to_float("d.u8"), svq::invalid_argument);
    REQUIRE_THROWS_WITH(f.to_float("d.u8"), Catch::Contains("U8") && Catch::Contains("d.u8"));
    REQUIRE_THROWS_WITH(f.at("nope"), Catch::Contains("t.safetensors") && Catch::Contains("nope"));
    const std::vector<float> big{1e5f};
    REQUIRE_THROWS_AS(w.add_floats("e", big, {1}, svq::dtype::f16), svq::overflow_error);
    REQUIRE_THROWS_AS(w.add_floats("a.f16", v, {30}), svq::invalid_argument);  // twice
    REQUIRE_THROWS_AS(w.add_floats("f", v, {7, 5}), svq::invalid_argument);    // shape disagrees
}

TEST_CASE("F16 -> float: all 65,536 values against the closed form", "[io]") {
    // (-1)^s * m * 2^-24 for exponent 0, (-1)^s * (1024 + m) * 2^(e - 25) otherwise, inf/NaN for e = 31.
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const std::uint32_t e = (h >> 10) & 31u, m = h & 1023u;
        const double sign = (h & 0x8000u) ? -1.0 : 1.0;
        const float got = svq::half_to_float(static_cast<std::uint16_t>(h));
        INFO("half 0x" << std::hex << h);
        if (e == 31 && m != 0) {
            REQUIRE(std::isnan(got));
            REQUIRE(std::signbit(got) == ((h & 0x8000u) != 0));
            continue;
        }
        const double want = e == 31  ? sign * std::numeric_limits<double>::infinity()
                            : e == 0 ? sign * std::ldexp(static_cast<double>(m), -24)
                                     : sign * std::ldexp(static_cast<double>(1024 + m), static_cast<int>(e) - 25);
        REQUIRE(static_cast<double>(got) == want);
        REQUIRE(std::signbit(got) == ((h & 0x8000u) != 0));  // -0 stays -0
        if (e != 31) REQUIRE(svq::float_to_half(got) == h);  // and round-trips
    }
}

TEST_CASE("safetensors: to_float into a caller's buffer, over threads, equals to_float", "[io]") {
    // 5000 elements: the slices of whole 1024-float pages end in a partial page.
    const std::vector<float> v = gaussian(5000, 3);
    std::vector<double> d(v.begin(), v.end());
    svq::safetensors_writer w;
    for (const svq::dtype t : {svq::dtype::f32, svq::dtype::f16, svq::dtype::bf16})
        w.add_floats(std::string(svq::dtype_name(t)), v, {50, 100}, t);
    w.add("F64", svq::dtype::f64, {5000}, std::as_bytes(std::span<const double>(d)));
    const svq::safetensors_file f = parse(w.to_bytes());
    for (const std::string name : {"F32", "F16", "BF16", "F64"}) {
        INFO(name);
        const std::vector<float> whole = f.to_float(name);
        for (const unsigned threads : {1u, 2u, 3u}) {
            std::vector<float> out(5000, -1.0f);
            f.to_float(name, out, threads);
            CHECK(same_bits(out, whole));
        }
    }
    std::vector<float> wrong(4999);
    REQUIRE_THROWS_AS(f.to_float("F16", wrong), svq::invalid_argument);
    REQUIRE_THROWS_WITH(f.to_float("F16", wrong), Catch::Contains("5000") && Catch::Contains("4999"));
}

TEST_CASE("safetensors: every malformed header is a typed error naming the file and tensor", "[io]") {
    auto fails_with = [](const std::vector<std::byte>& b, const std::string& what) {
        INFO(what);
        REQUIRE_THROWS_AS(parse(b, "bad.safetensors"), svq::corrupt_data);
        REQUIRE_THROWS_WITH(parse(b, "bad.safetensors"), Catch::Contains("bad.safetensors") && Catch::Contains(what));
    };
    fails_with(std::vector<std::byte>(5), "shorter than the 8-byte header length");
    std::vector<std::byte> past = raw_file("{}", 0);
    past[0] = std::byte{200};
    fails_with(past, "runs past the end");
    fails_with(raw_file("{\"a\": {", 0), "not a JSON object");
    fails_with(raw_file("[1, 2]", 0), "does not start with");
    fails_with(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "outside the data");
    fails_with(raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "tensor 'w'");
    fails_with(raw_file(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8), "unknown dtype 'Q4'");
    fails_with(raw_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "not a size");
    fails_with(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        12),
               "overlap");
    fails_with(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "gap of 4 bytes");
    fails_with(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8), "cover 4 bytes");
    fails_with(raw_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4),
               "more elements than a size_t holds");
    fails_with(raw_file(R"({"__metadata__":{"k":1}})", 0), "'k' is not a string");
    fails_with(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4), "unknown field 'x'");
}

TEST_CASE("npy: float32/16/64 in either byte order and Fortran order read as numpy wrote them", "[io]") {
    temp_dir dir("io_npy");
    const std::vector<float> v = gaussian(3 * 4, 2);
    const std::size_t shape[] = {3, 4};
    svq::write_npy(dir.path / "a.npy", v, shape);
    const svq::npy_array a = svq::read_npy(dir.path / "a.npy");
    CHECK(a.shape == std::vector<std::size_t>{3, 4});
    CHECK(same_bits(a.values, v));
    CHECK(fs::file_size(dir.path / "a.npy") == 128 + v.size() * 4);  // numpy's 64-byte-aligned header

    // Hand-built: big-endian float64, Fortran order, version 2.0.
    std::string header = "{'descr': '>f8', 'fortran_order': True, 'shape': (2, 3), }";
    header.append(64 - (12 + header.size() + 1) % 64, ' ');
    header += '\n';
    std::vector<std::byte> b(12 + header.size());
    const char magic[] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 2, 0};
    std::memcpy(b.data(), magic, 8);
    const auto n = static_cast<std::uint32_t>(header.size());
    std::memcpy(b.data() + 8, &n, 4);
    std::memcpy(b.data() + 12, header.data(), header.size());
    const double m[2][3] = {{1.5, -2.0, 3.25}, {4.0, 5.5, -6.0}};
    for (std::size_t c = 0; c < 3; ++c)
        for (std::size_t r = 0; r < 2; ++r) {  // column-major, big-endian
            unsigned char e[8];
            std::memcpy(e, &m[r][c], 8);
            for (int k = 7; k >= 0; --k) b.push_back(static_cast<std::byte>(e[k]));
        }
    const svq::npy_array f = svq::parse_npy(b, "f.npy");
    REQUIRE(f.shape == std::vector<std::size_t>{2, 3});
    CHECK(f.values == std::vector<float>{1.5f, -2.0f, 3.25f, 4.0f, 5.5f, -6.0f});

    auto fails_with = [](std::vector<std::byte> bytes, const std::string& what) {
        INFO(what);
        REQUIRE_THROWS_AS(svq::parse_npy(bytes, "x.npy"), svq::corrupt_data);
        REQUIRE_THROWS_WITH(svq::parse_npy(bytes, "x.npy"), Catch::Contains("x.npy") && Catch::Contains(what));
    };
    fails_with(std::vector<std::byte>(b.begin(), b.end() - 1), "bytes of data");
    fails_with(std::vector<std::byte>(b.begin(), b.begin() + 7), "magic");
    std::vector<std::byte> i4 = b;
    std::memcpy(i4.data() + 12 + 11, "<i4", 3);
    fails_with(i4, "is not a float");
    std::vector<std::byte> v9 = b;
    v9[6] = std::byte{9};
    fails_with(v9, "version 9.0");
}

namespace {

// One of each storable result (tests/support/method_zoo.hpp), small enough
// for the corruption test, and a plain tensor.
struct zoo : svq::test::method_zoo {
    std::vector<float> embedding = gaussian(10 * 6, 13);

    std::vector<std::byte> bytes() const {
        svq::model_writer mw;
        mw.add("plain", plain);
        mw.add("plain8", plain8);
        mw.add("hessian", hessian, "hessian");
        mw.add("rtn", rtn);
        const std::string k[] = {"crvq_k"}, p[] = {"crvq_p"};
        mw.add_crvq("books_k", ck, k);
        mw.add_crvq("books_p", cp, p);
        mw.add("trellis", trellis);
        mw.add_tensor("embedding", embedding, {10, 6});
        return mw.to_bytes();
    }
    // Every decode the file gives, in one list.
    std::vector<std::vector<float>> expected() const {
        return {plain.dequantize(),         plain8.dequantize(),         hessian.dequantize(), rtn.dequantize(),
                ck.matrices[0].dequantize(), cp.matrices[0].dequantize(), trellis.dequantize(), embedding};
    }
    static std::vector<std::vector<float>> decode(const svq::model_file& f) {
        return {f.pvq("plain").dequantize(),
                f.pvq("plain8").dequantize(),
                f.pvq("hessian").dequantize(),
                f.rtn("rtn").dequantize(),
                f.crvq<svq::kmeans_base>("crvq_k").dequantize(),
                f.crvq<svq::pvq_base>("crvq_p").dequantize(),
                f.trellis("trellis").dequantize(),
                f.tensor("embedding")};
    }
};

}  // namespace

TEST_CASE("quantized files: every method round-trips bit for bit, words read in place", "[io]") {
    const zoo z;
    temp_dir dir("io_roundtrip");
    const fs::path path = dir.path / "model.svq.safetensors";
    {
        const std::vector<std::byte> b = z.bytes();
        std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    }
    for (const bool mmap : {true, false}) {
        const svq::model_file f = svq::load(path, {.verify_checksums = true, .mmap = mmap});
        CHECK(f.file().storage()->mapped() == mmap);
        CHECK(f.matrices() == std::vector<std::string>{"crvq_k", "crvq_p", "hessian", "plain", "plain8", "rtn", "trellis"});
        CHECK(f.tensors() == std::vector<std::string>{"embedding"});
        CHECK(f.method("plain") == "pvq");
        CHECK(f.method("rtn") == "rtn");
        CHECK(f.method("crvq_k") == "crvq");
        CHECK(f.method("trellis") == "trellis");
        const auto got = zoo::decode(f), want = z.expected();
        for (std::size_t i = 0; i < want.size(); ++i) {
            INFO("part " << i);
            CHECK(same_bits(got[i], want[i]));
        }
        const std::string names[] = {"plain", "plain8", "hessian", "rtn", "crvq_k", "crvq_p", "trellis"};
        for (std::size_t i = 0; i < std::size(names); ++i) CHECK(same_bits(f.dequantize(names[i]), want[i]));

        // The trellis matrix: its stream, factors and configuration as written.
        const svq::trellis_matrix t = f.trellis("trellis");
        CHECK(t.config() == z.trellis.config());
        CHECK(std::equal(t.payload().begin(), t.payload().end(), z.trellis.payload().begin(), z.trellis.payload().end()));
        CHECK(t.stored_bits() == z.trellis.stored_bits());

        // The loaded PVQ matrix's words are the file's bytes, not a copy.
        const svq::quantized_matrix q = f.pvq("plain");
        const std::span<const std::byte> file = f.file().storage()->bytes();
        const auto* words = reinterpret_cast<const std::byte*>(q.words().data());
        CHECK(words >= file.data());
        CHECK(words + q.words().size_bytes() <= file.data() + file.size());
        CHECK(std::equal(q.words().begin(), q.words().end(), z.plain.words().begin(), z.plain.words().end()));
        CHECK(q.config() == z.plain.config());
        CHECK(q.reference_scale() == z.plain.reference_scale());
        CHECK(q.stored_bits() == z.plain.stored_bits());

        // The fused GEMV runs on the mapped words and gives the original's product.
        const std::vector<float> x = gaussian(z.cols, 5);
        std::vector<float> y0(z.rows), y1(z.rows);
        svq::matrix_decoder(z.plain).gemv(x, y0);
        svq::matrix_decoder(q).gemv(x, y1);
        CHECK(same_bits(y0, y1));
    }
    // A matrix outlives the file object it came from (it holds the mapping).
    svq::quantized_matrix kept;
    { kept = svq::load(path).pvq("hessian"); }
    CHECK(same_bits(kept.dequantize(), z.hessian.dequantize()));
}

TEST_CASE("quantized files: config families and the one-call save", "[io]") {
    temp_dir dir("io_families");
    const std::size_t rows = 20, cols = 200;  // 200 = 6 groups of 32 + a tail of 8
    const std::vector<float> w = gaussian(rows * cols, 21);
    std::vector<svq::quantized_matrix> qs;
    for (const std::size_t n : {8, 16, 32, 64, 128})
        for (const unsigned sb : {8u, 16u})
            for (const bool rotate : {false, true}) qs.push_back(svq::quantize(w, rows, cols, svq::test::explicit_config(n, n + n / 2, 5, sb, rotate)));
    for (const double bpw : {2.0, 3.0, 4.0}) qs.push_back(svq::quantize(w, rows, cols, {.target_bpw = bpw}));
    for (std::size_t i = 0; i < qs.size(); ++i) {
        INFO("config " << svq::to_string(qs[i].config()));
        const fs::path p = dir.path / fmt::format("m{}.safetensors", i);
        svq::save(p, "layers.0.w", qs[i]);
        const svq::quantized_matrix back = svq::load(p).pvq("layers.0.w");
        CHECK(same_bits(back.dequantize(), qs[i].dequantize()));
        // The file holds the stored bits plus a header of a few hundred bytes.
        CHECK(fs::file_size(p) * 8 >= qs[i].stored_bits());
        CHECK(fs::file_size(p) * 8 <= qs[i].stored_bits() + 8 * 1600);
    }
}

TEST_CASE("quantized files: versions, checksums and disagreeing entries are typed errors", "[io]") {
    const zoo z;
    const std::vector<std::byte> good = z.bytes();
    const svq::safetensors_file f = parse(good);
    auto load_bytes = [](const std::vector<std::byte>& b, svq::load_options o = {}) {
        return svq::model_file(svq::mapped_file::from_bytes(b, "m.safetensors"), o);
    };
    // A file with one metadata entry replaced (re-serialised, so the header stays valid).
    auto with_metadata = [&](const std::string& key, const std::string& value) {
        svq::safetensors_writer w;
        for (const svq::tensor_info& t : f.tensors()) w.add(t.name, t.type, t.shape, f.data(t));
        for (const auto& [k, v] : f.metadata()) w.set_metadata(k, k == key ? value : v);
        return w.to_bytes();
    };
    REQUIRE_THROWS_WITH(load_bytes(with_metadata("svq.version", "2")),
                        Catch::Contains("m.safetensors") && Catch::Contains("newer"));
    REQUIRE_THROWS_AS(load_bytes(with_metadata("svq.version", "x")), svq::corrupt_data);
    {
        std::string d = *f.metadata("plain.svq");
        d.replace(d.find("\"format_version\":3"), 18, "\"format_version\":4");
        const auto b = with_metadata("plain.svq", d);
        // The checksum of the entry catches it; without checksums the version check does.
        REQUIRE_THROWS_WITH(load_bytes(b).pvq("plain"), Catch::Contains("checksum") && Catch::Contains("plain.svq"));
        REQUIRE_THROWS_WITH(load_bytes(b, {.verify_checksums = false}).pvq("plain"),
                            Catch::Contains("matrix 'plain'") && Catch::Contains("format version 4") &&
                                Catch::Contains("newer"));
        std::string k = *f.metadata("plain.svq");
        k.replace(k.find("\"pulses\":20"), 11, "\"pulses\":21");
        REQUIRE_THROWS_AS(load_bytes(with_metadata("plain.svq", k), {.verify_checksums = false}).pvq("plain"),
                          svq::corrupt_data);
        // A trellis entry whose configuration disagrees with its payload, or is out of range.
        std::string t = *f.metadata("trellis.svq");
        t.replace(t.find("\"bits_per_64\":200"), 17, "\"bits_per_64\":260");
        REQUIRE_THROWS_WITH(load_bytes(with_metadata("trellis.svq", t), {.verify_checksums = false}).trellis("trellis"),
                            Catch::Contains("matrix 'trellis'") && Catch::Contains("trellis.svq.payload"));
        t = *f.metadata("trellis.svq");
        t.replace(t.find("\"state_bits\":8"), 14, "\"state_bits\":40");
        REQUIRE_THROWS_WITH(load_bytes(with_metadata("trellis.svq", t), {.verify_checksums = false}).trellis("trellis"),
                            Catch::Contains("matrix 'trellis'") && Catch::Contains("state_bits = 40"));
    }
    {  // One stored bit of the words flipped: the checksum names the tensor.
        std::vector<std::byte> b = good;
        const svq::tensor_info& t = f.at("plain.svq.words");
        const std::size_t at = static_cast<std::size_t>(f.data(t).data() - f.storage()->bytes().data()) + 3;
        b[at] ^= std::byte{0x10};
        REQUIRE_THROWS_AS(load_bytes(b).pvq("plain"), svq::corrupt_data);
        REQUIRE_THROWS_WITH(load_bytes(b).pvq("plain"),
                            Catch::Contains("m.safetensors") && Catch::Contains("plain.svq.words") && Catch::Contains("checksum"));
        // Skipping the checksums reads it (one changed index: a different, valid decode or a typed error).
        try {
            (void)load_bytes(b, {.verify_checksums = false}).pvq("plain").dequantize();
        } catch (const svq::corrupt_data&) {
        }
    }
    REQUIRE_THROWS_AS(load_bytes(good).rtn("plain"), svq::invalid_argument);       // wrong method
    REQUIRE_THROWS_AS(load_bytes(good).pvq("absent"), svq::invalid_argument);      // no such matrix
    REQUIRE_THROWS_AS(load_bytes(good).crvq<svq::pvq_base>("crvq_k"), svq::invalid_argument);  // other base
    REQUIRE_THROWS_AS(svq::load("/nonexistent/svq/file.safetensors"), svq::io_error);
    {  // A plain safetensors file is not an svq file.
        svq::safetensors_writer w;
        w.add_floats("x", std::vector<float>{1.0f}, {1});
        REQUIRE_THROWS_WITH(load_bytes(w.to_bytes()), Catch::Contains("not an svq file"));
    }
}

TEST_CASE("quantized files: 10,000 single-byte corruptions are each a typed error or the exact decode", "[io]") {
    const zoo z;
    const std::vector<std::byte> good = z.bytes();
    const std::size_t data_start = parse(good).tensors().empty() ? 0 : [&] {
        std::uint64_t n;
        std::memcpy(&n, good.data(), 8);
        return static_cast<std::size_t>(8 + n);
    }();
    const auto want = z.expected();
    std::mt19937_64 rng(2026);
    std::uniform_int_distribution<std::size_t> pos(0, good.size() - 1);
    std::uniform_int_distribution<int> bits(1, 255);
    std::size_t errors = 0, exact = 0, checksum_caught = 0, data_flips = 0;
    std::vector<std::byte> b = good;
#ifdef SVQ_SANITIZE_BUILD
    const int trials = 1000;  // the full count runs in the normal build
#else
    const int trials = 10000;
#endif
    for (int trial = 0; trial < trials; ++trial) {
        const std::size_t at = pos(rng);
        b[at] = good[at] ^ static_cast<std::byte>(bits(rng));
        bool threw = false;
        std::string message;
        try {
            const svq::model_file f(svq::mapped_file::from_bytes(b, "flip.safetensors"), {});
            const auto got = zoo::decode(f);
            bool same = got.size() == want.size();
            for (std::size_t i = 0; same && i < want.size(); ++i) same = same_bits(got[i], want[i]);
            INFO("byte " << at << " of " << good.size() << ": decoded without error to something else");
            REQUIRE(same);
            ++exact;
        } catch (const svq::error& e) {
            threw = true;
            message = e.what();
            ++errors;
        }
        if (at >= data_start) {  // inside stored data: the checksum must catch it
            ++data_flips;
            INFO("byte " << at << " (data starts at " << data_start << "): " << message);
            REQUIRE(threw);
            REQUIRE(message.find("checksum") != std::string::npos);
            ++checksum_caught;
        }
        b[at] = good[at];
    }
    std::printf("%d single-byte corruptions: %zu typed errors, %zu exact decodes; %zu in the data, all caught by a checksum\n",
                trials, errors, exact, data_flips);
    CHECK(errors + exact == static_cast<std::size_t>(trials));
    CHECK(checksum_caught == data_flips);
    CHECK(data_flips > static_cast<std::size_t>(trials) / 5);  // about half of this small file is data
}
