// Quantized matrices in safetensors files (docs/format.md specifies it).
//
// A quantized matrix W is stored as plain tensors named W.svq.<part> (its
// payload words, reference scale, codes, ...) and one metadata entry "W.svq",
// a JSON object with its method, format version, shape, configuration and,
// for every part, the tensor's name, dtype, shape and xxh64 checksum. Two
// file-level entries: "svq.version" (this container's version) and
// "svq.checksums" (the xxh64 of every "*.svq" entry's text, and the dtype,
// shape and xxh64 of every tensor svq wrote unquantized). Every stored bit is
// thus covered by a checksum, verified on load unless load_options says not.
//
// svq::load maps the file; a PVQ matrix's words are used where they lie in
// the mapping (no copy): decoding and the fused GEMV (kernels/gemv.hpp) read
// the file's pages. RTN, CRVQ and trellis parts are copied (a trellis
// matrix keeps 16 bytes of padding after its stream for its vector reads).
#pragma once

#include <svq/crvq/crvq.hpp>
#include <svq/error.hpp>
#include <svq/io/mapped_file.hpp>
#include <svq/io/safetensors.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/matrix/rtn.hpp>
#include <svq/trellis/trellis.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace svq {

// The version of the container (the metadata layout) this svq writes and reads.
inline constexpr unsigned file_version = 1;
// Versions of each method's stored form (a description's "format_version").
inline constexpr unsigned pvq_format_version = 3;  // the row format (format/row_format.hpp)
inline constexpr unsigned rtn_format_version = 1;
inline constexpr unsigned crvq_format_version = 1;
inline constexpr unsigned trellis_format_version = 1;  // trellis/trellis.hpp

// xxh64 (seed 0) of bytes, and its 16-digit lower-case hex form as stored.
inline std::uint64_t xxh64(std::span<const std::byte> bytes) noexcept { return XXH64(bytes.data(), bytes.size(), 0); }
inline std::string xxh64_hex(std::span<const std::byte> bytes) { return fmt::format("{:016x}", xxh64(bytes)); }

namespace detail {

template <class T>
std::span<const std::byte> bytes_of(std::span<const T> v) noexcept {
    return {reinterpret_cast<const std::byte*>(v.data()), v.size_bytes()};
}
inline std::span<const std::byte> bytes_of(const std::string& s) noexcept {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// The narrowest unsigned dtype holding `bits`-bit codes.
inline dtype code_dtype(unsigned bits) noexcept { return bits <= 8 ? dtype::u8 : bits <= 16 ? dtype::u16 : dtype::u32; }

// Codes (uint32) as `type` (u8/u16/u32) bytes.
inline std::vector<std::byte> narrow_codes(std::span<const std::uint32_t> codes, dtype type) {
    const std::size_t size = dtype_size(type);
    std::vector<std::byte> out(codes.size() * size);
    for (std::size_t i = 0; i < codes.size(); ++i) {
        if (type == dtype::u8) {
            const auto v = static_cast<std::uint8_t>(codes[i]);
            std::memcpy(out.data() + i, &v, 1);
        } else if (type == dtype::u16) {
            const auto v = static_cast<std::uint16_t>(codes[i]);
            std::memcpy(out.data() + 2 * i, &v, 2);
        } else {
            std::memcpy(out.data() + 4 * i, &codes[i], 4);
        }
    }
    return out;
}

// Reads a description's fields, throwing svq::corrupt_data that names the
// file, the entry and the field.
class description_reader {
public:
    description_reader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {
        if (!j_.is_object()) fail("is not a JSON object");
    }
    [[noreturn]] void fail(const std::string& what) const { throw corrupt_data(fmt::format("{}: {}", where_, what)); }
    const std::string& where() const noexcept { return where_; }
    const nlohmann::json& field(const char* key) const {
        const auto it = j_.find(key);
        if (it == j_.end()) fail(fmt::format("no field '{}'", key));
        return *it;
    }
    bool has(const char* key) const { return j_.contains(key); }
    std::uint64_t uint(const char* key, std::uint64_t max = static_cast<std::uint64_t>(-1)) const {
        const nlohmann::json& v = field(key);
        if (!v.is_number_unsigned()) fail(fmt::format("field '{}' = {} is not an unsigned integer", key, v.dump()));
        const auto x = v.get<std::uint64_t>();
        if (x > max) fail(fmt::format("field '{}' = {} exceeds {}", key, x, max));
        return x;
    }
    std::size_t size(const char* key) const {
        return static_cast<std::size_t>(uint(key, static_cast<std::uint64_t>(static_cast<std::size_t>(-1))));
    }
    bool boolean(const char* key) const {
        const nlohmann::json& v = field(key);
        if (!v.is_boolean()) fail(fmt::format("field '{}' = {} is not true or false", key, v.dump()));
        return v.get<bool>();
    }
    std::string string(const char* key) const {
        const nlohmann::json& v = field(key);
        if (!v.is_string()) fail(fmt::format("field '{}' = {} is not a string", key, v.dump()));
        return v.get<std::string>();
    }
    description_reader object(const char* key) const {
        return description_reader(field(key), fmt::format("{}: field '{}'", where_, key));
    }
    std::pair<std::size_t, std::size_t> shape2() const {
        const nlohmann::json& v = field("shape");
        if (!v.is_array() || v.size() != 2 || !v[0].is_number_unsigned() || !v[1].is_number_unsigned())
            fail(fmt::format("shape {} is not [rows, cols]", v.dump()));
        const auto r = v[0].get<std::uint64_t>(), c = v[1].get<std::uint64_t>();
        if (r == 0 || c == 0) fail(fmt::format("shape {} is empty", v.dump()));
        if (r > static_cast<std::size_t>(-1) / c) fail(fmt::format("shape {} has more entries than a size_t holds", v.dump()));
        return {static_cast<std::size_t>(r), static_cast<std::size_t>(c)};
    }
    void version(unsigned supported) const {
        const std::uint64_t v = uint("format_version");
        if (v != supported)
            fail(fmt::format("format version {} ({}); this svq reads version {}", v,
                             v > supported ? "written by a newer svq" : "unknown", supported));
    }
    const nlohmann::json& json() const noexcept { return j_; }

private:
    const nlohmann::json& j_;
    std::string where_;
};

}  // namespace detail

// Builds a file of quantized matrices and plain tensors (model_writer::write).
// Matrices are referenced, not copied, until write(): keep them alive.
class model_writer {
public:
    // A PVQ matrix (plain or Hessian-searched: `search` is "mse" or
    // "hessian", recorded as provenance; the stored form is the same).
    void add(const std::string& name, const quantized_matrix& q, std::string_view search = "mse") {
        add_description(name, pvq_description(name + ".svq.", q, search));
    }

    // A round-to-nearest matrix: codes as I8 [rows, cols], scales as F16 [rows, groups].
    void add(const std::string& name, const rtn_matrix& m) {
        nlohmann::ordered_json d = {{"method", "rtn"},
                                    {"format_version", rtn_format_version},
                                    {"shape", {m.rows(), m.cols()}},
                                    {"config", {{"bits", m.config().bits}, {"group", m.config().group}}}};
        nlohmann::ordered_json parts = nlohmann::ordered_json::object();
        parts["codes"] = add_part(name + ".svq.codes", dtype::i8, {m.rows(), m.cols()}, detail::bytes_of(m.codes()));
        parts["scales"] =
            add_part(name + ".svq.scales", dtype::f16, {m.rows(), m.groups_per_row()}, detail::bytes_of(m.scales()));
        d["parts"] = std::move(parts);
        add_description(name, std::move(d));
    }

    // A trellis-coded matrix: its stream as U8 [payload bytes], its row
    // factors as BF16 [rows].
    void add(const std::string& name, const trellis_matrix& m) {
        if (m.rows() == 0) throw invalid_argument(fmt::format("model_writer: matrix '{}' is empty", name));
        const trellis_config& c = m.config();
        nlohmann::ordered_json d = {{"method", "trellis"},
                                    {"format_version", trellis_format_version},
                                    {"shape", {m.rows(), m.cols()}},
                                    {"config",
                                     {{"bits_per_64", c.bits_per_64},
                                      {"state_bits", c.state_bits},
                                      {"rotate", c.rotate},
                                      {"seed", c.seed}}}};
        nlohmann::ordered_json parts = nlohmann::ordered_json::object();
        parts["payload"] = add_part(name + ".svq.payload", dtype::u8, {m.payload().size()}, detail::bytes_of(m.payload()));
        parts["factors"] = add_part(name + ".svq.factors", dtype::bf16, {m.rows()}, detail::bytes_of(m.factors()));
        d["parts"] = std::move(parts);
        add_description(name, std::move(d));
    }

    // The matrices of one CRVQ call: their shared codebooks under `codebooks`
    // (the entry "<codebooks>.svq" and tensors <codebooks>.svq.*), matrix i
    // under names[i]. B: kmeans_base or pvq_base.
    template <class B>
    void add_crvq(const std::string& codebooks, const crvq_model<B>& model, std::span<const std::string> names) {
        static_assert(std::same_as<B, kmeans_base> || std::same_as<B, pvq_base>,
                      "model_writer stores CRVQ with a k-means or a PVQ base");
        if (names.size() != model.matrices.size())
            throw invalid_argument(fmt::format("model_writer::add_crvq: {} names for {} matrices", names.size(),
                                               model.matrices.size()));
        if (!model.codebooks) throw invalid_argument("model_writer::add_crvq: the model has no codebooks");
        const crvq_codebooks<B>& books = *model.codebooks;
        nlohmann::ordered_json d = {{"method", "crvq_codebooks"},
                                    {"format_version", crvq_format_version},
                                    {"base", std::same_as<B, kmeans_base> ? "kmeans" : "pvq"}};
        nlohmann::ordered_json parts = nlohmann::ordered_json::object(), list = nlohmann::ordered_json::array();
        if constexpr (std::same_as<B, kmeans_base>) {
            if (!books.base) throw invalid_argument("model_writer::add_crvq: a k-means base without its codebook");
            d["base_codebook"] = {{"dim", books.base->dim()}, {"bits", books.base->code_bits()}};
            parts["base_codebook"] = add_codebook(codebooks + ".svq.base_codebook", *books.base);
        }
        for (std::size_t i = 0; i < books.extended.size(); ++i) {
            list.push_back({{"dim", books.extended[i].dim()}, {"bits", books.extended[i].code_bits()}});
            parts[fmt::format("extended.{}", i)] = add_codebook(fmt::format("{}.svq.extended.{}", codebooks, i), books.extended[i]);
        }
        d["extended"] = std::move(list);
        d["parts"] = std::move(parts);
        add_description(codebooks, std::move(d));
        for (std::size_t i = 0; i < names.size(); ++i) add_crvq_matrix(names[i], codebooks, model.matrices[i]);
    }

    // A tensor left unquantized, from floats (stored as F32, F16 or BF16).
    void add_tensor(const std::string& name, std::span<const float> values, std::vector<std::size_t> shape,
                    dtype type = dtype::f32) {
        check_plain(name);
        w_.add_floats(name, values, shape, type);
        record_plain(name, type, std::move(shape), w_.data(name));
    }
    // A tensor left unquantized, copied as it is (any dtype: a checkpoint's BF16 embedding).
    void add_tensor_bytes(const std::string& name, dtype type, std::vector<std::size_t> shape, std::span<const std::byte> data) {
        check_plain(name);
        w_.add(name, type, shape, data);
        record_plain(name, type, std::move(shape), data);
    }
    // Free-form metadata (names starting with "svq." or ending in ".svq" are svq's).
    void set_metadata(const std::string& key, std::string value) {
        if (key.starts_with("svq.") || key.ends_with(".svq"))
            throw invalid_argument(fmt::format("model_writer: metadata key '{}' is reserved for svq", key));
        w_.set_metadata(key, std::move(value));
    }

    std::vector<std::byte> to_bytes() { return finish().to_bytes(); }
    // Writes the file (through a temporary renamed at the end). Throws svq::io_error.
    void write(const std::filesystem::path& path) { finish().write(path); }

private:
    nlohmann::ordered_json add_part(const std::string& tensor, dtype type, std::vector<std::size_t> shape,
                                    std::span<const std::byte> data, std::shared_ptr<const void> keep = {}) {
        check_new(tensor);
        nlohmann::ordered_json p = {{"tensor", tensor}, {"dtype", dtype_name(type)}, {"shape", shape}, {"xxh64", xxh64_hex(data)}};
        if (keep) w_.add_view(tensor, type, std::move(shape), data, std::move(keep));
        else w_.add(tensor, type, std::move(shape), data);
        return p;
    }
    nlohmann::ordered_json add_codebook(const std::string& tensor, const kmeans_codebook& c) {
        const std::vector<std::uint16_t> h = c.halves();
        return add_part(tensor, dtype::f16, {c.entries(), c.dim()}, detail::bytes_of(std::span<const std::uint16_t>(h)));
    }
    nlohmann::ordered_json pvq_description(const std::string& prefix, const quantized_matrix& q, std::string_view search) {
        if (q.rows() == 0) throw invalid_argument(fmt::format("model_writer: matrix '{}' is empty", prefix));
        const matrix_config& c = q.config();
        nlohmann::ordered_json d = {{"method", "pvq"},
                                    {"search", std::string(search)},
                                    {"format_version", pvq_format_version},
                                    {"shape", {q.rows(), q.cols()}},
                                    {"config",
                                     {{"group_dim", c.group_dim},
                                      {"pulses", c.pulses},
                                      {"gain_bits", c.gain_bits},
                                      {"row_scale_bits", c.row_scale_bits},
                                      {"rotate", c.rotate},
                                      {"seed", c.seed}}}};
        const float ref = q.reference_scale();
        nlohmann::ordered_json parts = nlohmann::ordered_json::object();
        parts["words"] = add_part(prefix + "words", dtype::u64, {q.words().size()}, detail::bytes_of(q.words()),
                                  q.words_owner());
        parts["reference_scale"] =
            add_part(prefix + "reference_scale", dtype::f32, {1}, detail::bytes_of(std::span<const float>(&ref, 1)));
        d["parts"] = std::move(parts);
        return d;
    }
    template <class B>
    void add_crvq_matrix(const std::string& name, const std::string& codebooks, const crvq_matrix<B>& m) {
        const std::string prefix = name + ".svq.";
        nlohmann::ordered_json d = {{"method", "crvq"},
                                    {"format_version", crvq_format_version},
                                    {"base", std::same_as<B, kmeans_base> ? "kmeans" : "pvq"},
                                    {"codebooks", codebooks},
                                    {"shape", {m.rows(), m.cols()}},
                                    {"critical", m.critical_channels()},
                                    {"row_scale_bits", m.row_scale_bits()}};
        nlohmann::ordered_json parts = nlohmann::ordered_json::object();
        const float ref = m.reference_scale();
        parts["reference_scale"] =
            add_part(prefix + "reference_scale", dtype::f32, {1}, detail::bytes_of(std::span<const float>(&ref, 1)));
        auto codes = [&](const char* part, std::span<const std::uint32_t> v, unsigned bits) {
            const dtype t = detail::code_dtype(bits);
            const std::vector<std::byte> b = detail::narrow_codes(v, t);
            parts[part] = add_part(prefix + part, t, {v.size()}, b);
        };
        if (m.row_scale_bits() != 0) codes("row_scale_codes", m.row_scale_codes(), m.row_scale_bits());
        codes("permutation", m.permutation(), 32);
        const auto& books = m.codebooks();
        if (!books.extended.empty()) codes("extended_codes", m.extended_codes(), books.extended.front().code_bits());
        else codes("extended_codes", m.extended_codes(), 32);
        if constexpr (std::same_as<B, kmeans_base>) {
            codes("base_codes", m.base_part(), books.base->code_bits());
        } else {
            d["base_matrix"] = pvq_description(prefix + "base.", m.base_part(), "mse");
        }
        d["parts"] = std::move(parts);
        add_description(name, std::move(d));
    }
    void add_description(const std::string& name, nlohmann::ordered_json d) {
        if (name.empty()) throw invalid_argument("model_writer: an empty matrix name");
        const std::string key = name + ".svq";
        if (descriptions_.count(key) || w_.contains(name))
            throw invalid_argument(fmt::format("model_writer: '{}' added twice", name));
        descriptions_[key] = d.dump();
    }
    void check_new(const std::string& name) const {
        if (w_.contains(name)) throw invalid_argument(fmt::format("model_writer: tensor '{}' added twice", name));
    }
    // Plain tensors' names must not look like an svq part.
    void check_plain(const std::string& name) const {
        check_new(name);
        if (name.find(".svq.") != std::string::npos || name.ends_with(".svq"))
            throw invalid_argument(fmt::format("model_writer: tensor name '{}' is reserved for svq parts", name));
    }
    void record_plain(const std::string& name, dtype type, std::vector<std::size_t> shape, std::span<const std::byte> data) {
        plain_[name] = {{"dtype", dtype_name(type)}, {"shape", std::move(shape)}, {"xxh64", xxh64_hex(data)}};
    }
    // The metadata entries, computed once every part is in.
    safetensors_writer& finish() {
        nlohmann::ordered_json sums = {{"metadata", nlohmann::ordered_json::object()},
                                       {"tensors", nlohmann::ordered_json::object()}};
        for (const auto& [key, text] : descriptions_) {
            w_.set_metadata(key, text);
            sums["metadata"][key] = xxh64_hex(detail::bytes_of(text));
        }
        for (const auto& [name, sum] : plain_) sums["tensors"][name] = sum;
        w_.set_metadata("svq.version", std::to_string(file_version));
        w_.set_metadata("svq.checksums", sums.dump());
        return w_;
    }

    safetensors_writer w_;
    std::map<std::string, std::string> descriptions_;
    std::map<std::string, nlohmann::ordered_json> plain_;  // name -> {dtype, shape, xxh64}
};

// Saves one quantized matrix (any storable type) as `name` in a new file at `path`.
template <class M>
void save(const std::filesystem::path& path, const std::string& name, const M& m) {
    model_writer w;
    w.add(name, m);
    w.write(path);
}

struct load_options {
    bool verify_checksums = true;  // xxh64 of every part read (and every description) checked
    bool mmap = true;              // map the file (false: read it into memory)
};

// A file of quantized matrices opened for reading (svq::load).
class model_file {
public:
    model_file(std::shared_ptr<const mapped_file> storage, const load_options& options)
        : file_(std::move(storage)), options_(options) {
        const std::string* version = file_.metadata("svq.version");
        if (version == nullptr) throw corrupt_data(fmt::format("{}: no svq.version metadata: not an svq file", path()));
        if (*version != std::to_string(file_version))
            throw corrupt_data(fmt::format("{}: svq.version '{}' ({}); this svq reads version {}", path(), *version,
                                           is_newer(*version) ? "written by a newer svq" : "unknown", file_version));
        const std::string* sums = file_.metadata("svq.checksums");
        if (sums == nullptr) throw corrupt_data(fmt::format("{}: no svq.checksums metadata", path()));
        checksums_ = nlohmann::json::parse(*sums, nullptr, false);
        if (checksums_.is_discarded() || !checksums_.is_object() || !checksums_.contains("metadata") ||
            !checksums_["metadata"].is_object() || !checksums_.contains("tensors") || !checksums_["tensors"].is_object())
            throw corrupt_data(fmt::format("{}: svq.checksums is not an object with 'metadata' and 'tensors'", path()));
        for (const auto& [key, value] : file_.metadata())
            if (key.size() > 4 && key.ends_with(".svq")) {
                if (!checksums_["metadata"].contains(key))
                    throw corrupt_data(fmt::format("{}: metadata '{}' has no checksum in svq.checksums", path(), key));
            }
        for (auto it = checksums_["metadata"].begin(); it != checksums_["metadata"].end(); ++it)
            if (file_.metadata(it.key()) == nullptr)
                throw corrupt_data(fmt::format("{}: svq.checksums lists metadata '{}', which the file lacks", path(), it.key()));
        for (auto it = checksums_["tensors"].begin(); it != checksums_["tensors"].end(); ++it)
            if (file_.find(it.key()) == nullptr)
                throw corrupt_data(fmt::format("{}: svq.checksums lists tensor '{}', which the file lacks", path(), it.key()));
    }

    const std::string& path() const noexcept { return file_.path(); }
    const safetensors_file& file() const noexcept { return file_; }

    // Names of the quantized matrices (methods pvq, rtn, crvq, trellis), sorted.
    std::vector<std::string> matrices() const {
        std::vector<std::string> out;
        for (const auto& [key, value] : file_.metadata())
            if (key.size() > 4 && key.ends_with(".svq")) {
                const std::string name = key.substr(0, key.size() - 4);
                if (method(name) != "crvq_codebooks") out.push_back(name);
            }
        return out;
    }
    // Tensors that are not part of a quantized matrix, in data order.
    std::vector<std::string> tensors() const {
        std::vector<std::string> out;
        for (const tensor_info& t : file_.tensors())
            if (t.name.find(".svq.") == std::string::npos) out.push_back(t.name);
        return out;
    }
    // The method of matrix `name`: "pvq", "rtn", "crvq", "trellis" (or "crvq_codebooks").
    std::string method(const std::string& name) const { return reader(name).string("method"); }
    // The shape of matrix `name`.
    std::pair<std::size_t, std::size_t> shape(const std::string& name) const { return reader(name).shape2(); }

    // A PVQ matrix, its words in the file's bytes (no copy).
    quantized_matrix pvq(const std::string& name) const {
        const auto d = reader(name);
        expect_method(d, "pvq");
        return pvq_from(d);
    }
    rtn_matrix rtn(const std::string& name) const {
        const auto d = reader(name);
        expect_method(d, "rtn");
        d.version(rtn_format_version);
        const std::pair<std::size_t, std::size_t> shape = d.shape2();  // variables, not bindings: lambdas capture them
        const std::size_t rows = shape.first, cols = shape.second;
        const auto c = d.object("config");
        rtn_config config{static_cast<unsigned>(c.uint("bits", 8)), c.size("group")};
        if (config.bits == 0 || config.group == 0) c.fail(fmt::format("bits {} or group {} is zero", config.bits, config.group));
        const auto p = d.object("parts");
        const std::size_t groups = (cols + config.group - 1) / config.group;
        std::vector<std::int8_t> codes = part<std::int8_t>(p, "codes", dtype::i8, {rows, cols});
        std::vector<std::uint16_t> scales = part<std::uint16_t>(p, "scales", dtype::f16, {rows, groups});
        return wrap(d, [&] { return rtn_matrix(rows, cols, config, std::move(codes), std::move(scales)); });
    }
    trellis_matrix trellis(const std::string& name) const {
        const auto d = reader(name);
        expect_method(d, "trellis");
        d.version(trellis_format_version);
        const std::pair<std::size_t, std::size_t> shape = d.shape2();  // variables, not bindings: lambdas capture them
        const std::size_t rows = shape.first, cols = shape.second;
        const auto c = d.object("config");
        trellis_config config;
        config.bits_per_64 = static_cast<unsigned>(c.uint("bits_per_64", 1024));
        config.state_bits = static_cast<unsigned>(c.uint("state_bits", 64));
        config.rotate = c.boolean("rotate");
        config.seed = c.uint("seed");
        const detail::trellis_layout layout =
            wrap(d, [&] { return detail::make_trellis_layout(rows, cols, config, "trellis_matrix"); });
        const auto p = d.object("parts");
        std::vector<std::uint8_t> payload = part<std::uint8_t>(p, "payload", dtype::u8, {layout.payload_bytes});
        std::vector<std::uint16_t> factors = part<std::uint16_t>(p, "factors", dtype::bf16, {rows});
        return wrap(d, [&] { return trellis_matrix(rows, cols, config, std::move(payload), std::move(factors)); });
    }
    // A CRVQ matrix; B: kmeans_base or pvq_base (as stored: "base" in its entry).
    template <class B>
    crvq_matrix<B> crvq(const std::string& name) const {
        static_assert(std::same_as<B, kmeans_base> || std::same_as<B, pvq_base>);
        const auto d = reader(name);
        expect_method(d, "crvq");
        d.version(crvq_format_version);
        const std::string base = d.string("base"), want = std::same_as<B, kmeans_base> ? "kmeans" : "pvq";
        if (base != want) throw invalid_argument(fmt::format("{}: the base is '{}', not '{}'", d.where(), base, want));
        const std::pair<std::size_t, std::size_t> shape = d.shape2();  // variables, not bindings: lambdas capture them
        const std::size_t rows = shape.first, cols = shape.second;
        const std::size_t critical = d.size("critical");
        const auto scale_bits = static_cast<unsigned>(d.uint("row_scale_bits", 16));
        const std::shared_ptr<const crvq_codebooks<B>> books = codebooks<B>(d.string("codebooks"));
        const auto p = d.object("parts");
        const float ref = part<float>(p, "reference_scale", dtype::f32, {1})[0];
        std::vector<std::uint32_t> scale_codes;
        if (scale_bits != 0) scale_codes = codes(p, "row_scale_codes", detail::code_dtype(scale_bits));
        std::vector<std::uint32_t> permutation = codes(p, "permutation", dtype::u32);
        const unsigned ext_bits = books->extended.empty() ? 32 : books->extended.front().code_bits();
        std::vector<std::uint32_t> extended = codes(p, "extended_codes", detail::code_dtype(ext_bits));
        typename B::matrix_type base_part;
        if constexpr (std::same_as<B, kmeans_base>) {
            if (!books->base) d.fail("its codebooks have no base codebook");
            base_part = codes(p, "base_codes", detail::code_dtype(books->base->code_bits()));
        } else {
            base_part = pvq_from(d.object("base_matrix"));
        }
        return wrap(d, [&] {
            return crvq_matrix<B>(rows, cols, books, ref, scale_bits, std::move(scale_codes), std::move(permutation),
                                  critical, std::move(base_part), std::move(extended));
        });
    }
    // Matrix `name` decoded, whatever its method (rows * cols floats, row-major).
    std::vector<float> dequantize(const std::string& name) const {
        const std::string m = method(name);
        if (m == "pvq") return pvq(name).dequantize();
        if (m == "rtn") return rtn(name).dequantize();
        if (m == "trellis") return trellis(name).dequantize();
        if (m == "crvq")
            return reader(name).string("base") == "pvq" ? crvq<pvq_base>(name).dequantize() : crvq<kmeans_base>(name).dequantize();
        throw invalid_argument(fmt::format("{}: '{}' is a {}, not a matrix", path(), name, m));
    }
    // A tensor stored unquantized, as floats (F32, F16, BF16, F64), its
    // checksum checked when svq wrote it.
    std::vector<float> tensor(const std::string& name) const {
        const tensor_info& t = file_.at(name);
        if (options_.verify_checksums) {
            const nlohmann::json& sums = checksums_.at("tensors");
            const auto it = sums.find(name);
            if (it != sums.end()) {
                const detail::description_reader r(*it, fmt::format("{}: checksum of tensor '{}'", path(), name));
                check_tensor(r, t, r.string("dtype"), shape_of(r));
                verify(r, t);
            }
        }
        return file_.to_float(name);
    }

private:
    static bool is_newer(const std::string& v) {
        return !v.empty() && v.size() < 10 && std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
               std::stoul(v) > file_version;
    }

    // The entry of `name`, its checksum verified, parsed (cached).
    detail::description_reader reader(const std::string& name) const {
        const std::string key = name + ".svq";
        std::lock_guard<std::mutex> lock(*mutex_);
        auto it = parsed_.find(key);
        if (it == parsed_.end()) {
            const std::string* text = file_.metadata(key);
            if (text == nullptr) throw invalid_argument(fmt::format("{}: no quantized matrix '{}'", path(), name));
            if (options_.verify_checksums) {
                const nlohmann::json& sums = checksums_.at("metadata");
                const auto want = sums.find(key);
                const std::string got = xxh64_hex(detail::bytes_of(*text));
                if (want == sums.end())
                    throw corrupt_data(fmt::format("{}: metadata '{}' has no checksum in svq.checksums", path(), key));
                if (!want->is_string() || want->get<std::string>() != got)
                    throw corrupt_data(fmt::format("{}: metadata '{}': checksum xxh64 {} does not match the stored {}",
                                                   path(), key, got, want->dump()));
            }
            nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
            if (j.is_discarded()) throw corrupt_data(fmt::format("{}: metadata '{}' is not JSON", path(), key));
            it = parsed_.emplace(key, std::make_unique<nlohmann::json>(std::move(j))).first;
        }
        return detail::description_reader(*it->second, fmt::format("{}: matrix '{}'", path(), name));
    }
    void expect_method(const detail::description_reader& d, const char* want) const {
        const std::string m = d.string("method");
        if (m != want) throw invalid_argument(fmt::format("{}: the method is '{}', not '{}'", d.where(), m, want));
    }
    static std::vector<std::size_t> shape_of(const detail::description_reader& r) {
        const nlohmann::json& s = r.field("shape");
        if (!s.is_array()) r.fail(fmt::format("shape {} is not an array", s.dump()));
        std::vector<std::size_t> out;
        for (const nlohmann::json& d : s) {
            if (!d.is_number_unsigned()) r.fail(fmt::format("shape {} is not sizes", s.dump()));
            out.push_back(d.get<std::size_t>());
        }
        return out;
    }
    void check_tensor(const detail::description_reader& r, const tensor_info& t, const std::string& type,
                      const std::vector<std::size_t>& shape) const {
        if (dtype_name(t.type) != type || t.shape != shape)
            r.fail(fmt::format("tensor '{}' is {} {} in the file, the entry says {} {}", t.name, dtype_name(t.type),
                               shape_string(t.shape), type, shape_string(shape)));
    }
    void verify(const detail::description_reader& r, const tensor_info& t) const {
        const std::string want = r.string("xxh64"), got = xxh64_hex(file_.data(t));
        if (want != got)
            throw corrupt_data(fmt::format("{}: tensor '{}': checksum xxh64 {} does not match the stored {}", r.where(), t.name,
                                           got, want));
    }
    // Part `role` of a description's parts: its tensor checked against the
    // entry (name, dtype, the shape the configuration implies) and verified.
    const tensor_info& part_tensor(const detail::description_reader& parts, const char* role, dtype type,
                                   const std::vector<std::size_t>& shape) const {
        const auto p = parts.object(role);
        const std::string name = p.string("tensor");
        const tensor_info* t = file_.find(name);
        if (t == nullptr) p.fail(fmt::format("tensor '{}' is not in the file", name));
        check_tensor(p, *t, p.string("dtype"), shape_of(p));
        if (t->type != type || t->shape != shape)
            p.fail(fmt::format("tensor '{}' is {} {}, the configuration needs {} {}", name, dtype_name(t->type),
                               shape_string(t->shape), dtype_name(type), shape_string(shape)));
        if (options_.verify_checksums) verify(p, *t);
        return *t;
    }
    template <class T>
    std::vector<T> part(const detail::description_reader& parts, const char* role, dtype type,
                        const std::vector<std::size_t>& shape) const {
        const std::span<const std::byte> b = file_.data(part_tensor(parts, role, type, shape));
        std::vector<T> out(b.size() / sizeof(T));
        if (!b.empty()) std::memcpy(out.data(), b.data(), b.size());
        return out;
    }
    // Codes of any length stored as `type` (u8/u16/u32), widened.
    std::vector<std::uint32_t> codes(const detail::description_reader& parts, const char* role, dtype type) const {
        const auto p = parts.object(role);
        const std::vector<std::size_t> s = shape_of(p);
        if (s.size() != 1) p.fail(fmt::format("shape {} is not one-dimensional", shape_string(s)));
        const std::span<const std::byte> b = file_.data(part_tensor(parts, role, type, s));
        const std::size_t size = dtype_size(type);
        std::vector<std::uint32_t> out(s[0]);
        for (std::size_t i = 0; i < out.size(); ++i) {
            std::uint32_t v = 0;
            std::memcpy(&v, b.data() + i * size, size);
            out[i] = v;
        }
        return out;
    }
    // Errors of a matrix's own checks get the file and matrix named.
    template <class F>
    std::invoke_result_t<F&> wrap(const detail::description_reader& d, F&& make) const {
        try {
            return make();
        } catch (const corrupt_data& e) {
            throw corrupt_data(fmt::format("{}: {}", d.where(), e.what()));
        } catch (const invalid_argument& e) {
            throw corrupt_data(fmt::format("{}: {}", d.where(), e.what()));
        } catch (const overflow_error& e) {
            throw corrupt_data(fmt::format("{}: {}", d.where(), e.what()));
        }
    }
    quantized_matrix pvq_from(const detail::description_reader& d) const {
        d.version(pvq_format_version);
        const std::pair<std::size_t, std::size_t> shape = d.shape2();  // variables, not bindings: lambdas capture them
        const std::size_t rows = shape.first, cols = shape.second;
        const auto c = d.object("config");
        matrix_config config;
        config.group_dim = c.size("group_dim");
        config.pulses = c.size("pulses");
        config.gain_bits = static_cast<unsigned>(c.uint("gain_bits", 64));
        config.row_scale_bits = static_cast<unsigned>(c.uint("row_scale_bits", 64));
        config.rotate = c.boolean("rotate");
        config.seed = c.uint("seed");
        const matrix_layout layout = wrap(d, [&] { return make_layout(rows, cols, config); });
        const auto p = d.object("parts");
        const float ref = part<float>(p, "reference_scale", dtype::f32, {1})[0];
        const tensor_info& words = part_tensor(p, "words", dtype::u64, {layout.payload_words()});
        const std::span<const std::byte> b = file_.data(words);
        if (reinterpret_cast<std::uintptr_t>(b.data()) % alignof(std::uint64_t) == 0) {
            const std::span<const std::uint64_t> w(reinterpret_cast<const std::uint64_t*>(b.data()), b.size() / 8);
            return wrap(d, [&] { return quantized_matrix(rows, cols, config, ref, w, file_.storage()); });
        }
        std::vector<std::uint64_t> w(b.size() / 8);  // a file not written by svq may leave them unaligned
        std::memcpy(w.data(), b.data(), b.size());
        return wrap(d, [&] { return quantized_matrix(rows, cols, config, ref, std::move(w)); });
    }
    template <class B>
    std::shared_ptr<const crvq_codebooks<B>> codebooks(const std::string& name) const {
        {
            std::lock_guard<std::mutex> lock(*mutex_);
            const auto it = books_.find(name);
            if (it != books_.end()) return std::static_pointer_cast<const crvq_codebooks<B>>(it->second);
        }
        const auto d = reader(name);
        expect_method(d, "crvq_codebooks");
        d.version(crvq_format_version);
        const std::string base = d.string("base"), want = std::same_as<B, kmeans_base> ? "kmeans" : "pvq";
        if (base != want) d.fail(fmt::format("the base is '{}', a matrix needs '{}'", base, want));
        auto books = std::make_shared<crvq_codebooks<B>>();
        const auto p = d.object("parts");
        auto book = [&](const detail::description_reader& spec, const std::string& role) {
            const std::size_t dim = spec.size("dim");
            const auto bits = static_cast<unsigned>(spec.uint("bits", 16));
            if (dim == 0 || dim > (std::size_t{1} << 20) || bits == 0) spec.fail(fmt::format("dim {} or bits {} out of range", dim, bits));
            const std::vector<std::uint16_t> h = part<std::uint16_t>(p, role.c_str(), dtype::f16, {std::size_t{1} << bits, dim});
            return wrap(d, [&] { return kmeans_codebook(dim, bits, h); });
        };
        if constexpr (std::same_as<B, kmeans_base>) books->base = book(d.object("base_codebook"), "base_codebook");
        const nlohmann::json& list = d.field("extended");
        if (!list.is_array()) d.fail("field 'extended' is not an array");
        for (std::size_t i = 0; i < list.size(); ++i) {
            const detail::description_reader spec(list[i], fmt::format("{}: extended codebook {}", d.where(), i));
            books->extended.push_back(book(spec, fmt::format("extended.{}", i)));
            if (books->extended.back().dim() != books->extended.front().dim() ||
                books->extended.back().code_bits() != books->extended.front().code_bits())
                spec.fail("extended codebooks of different shapes");
        }
        std::lock_guard<std::mutex> lock(*mutex_);
        books_[name] = books;
        return books;
    }

    safetensors_file file_;
    load_options options_;
    nlohmann::json checksums_;
    std::unique_ptr<std::mutex> mutex_ = std::make_unique<std::mutex>();
    mutable std::map<std::string, std::unique_ptr<nlohmann::json>> parsed_;
    mutable std::map<std::string, std::shared_ptr<const void>> books_;
};

// Opens an svq file: mapped (or read) per `options`, its header and svq
// metadata checked; each matrix is checked (and its checksums verified)
// when it is read. Throws svq::io_error or svq::corrupt_data naming the file.
inline model_file load(const std::filesystem::path& path, const load_options& options = {}) {
    return model_file(mapped_file::open(path, options.mmap), options);
}

}  // namespace svq
