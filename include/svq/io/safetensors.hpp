// safetensors files: the reader (validating every field of the header before
// any byte of data is used) and the writer.
//
// A file is
//   [8 bytes: N, the header length, unsigned little-endian]
//   [N bytes: a JSON object, possibly padded at the end with spaces]
//   [the data: every tensor's bytes, back to back]
// The header maps each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end]} (byte offsets into the data) and may hold "__metadata__", a
// map of strings to strings. The reader requires what the format requires:
// offsets inside the data, end - begin = elements * dtype size, and tensors
// that cover the data exactly (no overlap, no gap, nothing after the last).
// Anything else is svq::corrupt_data naming the file and the tensor.
//
// The writer puts 8-byte types first and pads the header with spaces so that
// the data starts at a multiple of 8: every tensor is aligned to its element
// size in the file, so a mapped file is read in place (io/mapped_file.hpp).
// Multi-byte values are little-endian (the format's byte order, and this
// header's requirement of the machine).
#pragma once

#include <svq/core/half.hpp>
#include <svq/core/parallel.hpp>
#include <svq/error.hpp>
#include <svq/io/mapped_file.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

static_assert(std::endian::native == std::endian::little, "svq's file readers assume a little-endian machine");

namespace svq {

// The element types of the safetensors format.
enum class dtype { f64, f32, f16, bf16, f8_e4m3, f8_e5m2, i64, i32, i16, i8, u64, u32, u16, u8, boolean };

namespace detail {

struct dtype_entry {
    dtype type;
    std::string_view name;
    std::size_t size;
};
inline constexpr dtype_entry dtype_table[] = {
    {dtype::f64, "F64", 8},         {dtype::f32, "F32", 4},         {dtype::f16, "F16", 2},
    {dtype::bf16, "BF16", 2},       {dtype::f8_e4m3, "F8_E4M3", 1}, {dtype::f8_e5m2, "F8_E5M2", 1},
    {dtype::i64, "I64", 8},         {dtype::i32, "I32", 4},         {dtype::i16, "I16", 2},
    {dtype::i8, "I8", 1},           {dtype::u64, "U64", 8},         {dtype::u32, "U32", 4},
    {dtype::u16, "U16", 2},         {dtype::u8, "U8", 1},           {dtype::boolean, "BOOL", 1},
};

// a * b, or overflow_error naming `what`.
inline std::size_t checked_mul(std::size_t a, std::size_t b, const std::string& what) {
    if (b != 0 && a > static_cast<std::size_t>(-1) / b)
        throw overflow_error(fmt::format("{}: {} x {} overflows a size_t", what, a, b));
    return a * b;
}

}  // namespace detail

// The format's name of t ("F32", "BF16", ...).
inline std::string_view dtype_name(dtype t) noexcept {
    for (const auto& e : detail::dtype_table)
        if (e.type == t) return e.name;
    return "?";
}
// Bytes of one element.
inline std::size_t dtype_size(dtype t) noexcept {
    for (const auto& e : detail::dtype_table)
        if (e.type == t) return e.size;
    return 0;
}
inline std::optional<dtype> parse_dtype(std::string_view name) noexcept {
    for (const auto& e : detail::dtype_table)
        if (e.name == name) return e.type;
    return std::nullopt;
}

// One tensor of a file: its name, type, shape and bytes [begin, end) of the data.
struct tensor_info {
    std::string name;
    dtype type = dtype::f32;
    std::vector<std::size_t> shape;
    std::size_t begin = 0;
    std::size_t end = 0;

    std::size_t elements() const noexcept {
        std::size_t n = 1;
        for (const std::size_t d : shape) n *= d;  // checked when the header was read
        return n;
    }
    std::size_t bytes() const noexcept { return end - begin; }
};

inline std::string shape_string(std::span<const std::size_t> shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// The parsed header of a safetensors file.
struct safetensors_header {
    std::map<std::string, std::string> metadata;  // "__metadata__"
    std::vector<tensor_info> tensors;             // in data order
    std::size_t data_start = 0;                   // file offset of the data (8 + N)
};

// The largest header the reader accepts (the reference implementation's limit).
inline constexpr std::size_t max_safetensors_header = 100'000'000;

// Parses and validates the header of a whole file's bytes (`file` names it in
// errors). Throws svq::corrupt_data for anything the format does not allow.
inline safetensors_header parse_safetensors_header(std::span<const std::byte> bytes, const std::string& file) {
    if (bytes.size() < 8)
        throw corrupt_data(fmt::format("{}: {} bytes, shorter than the 8-byte header length", file, bytes.size()));
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    if (n > bytes.size() - 8)
        throw corrupt_data(fmt::format("{}: header length {} runs past the end of the file ({} bytes)", file, n,
                                       bytes.size()));
    if (n > max_safetensors_header)
        throw corrupt_data(fmt::format("{}: header length {} exceeds the limit of {} bytes", file, n,
                                       max_safetensors_header));
    if (n == 0 || bytes[8] != std::byte{'{'})
        throw corrupt_data(fmt::format("{}: the header does not start with '{{'", file));
    const auto* text = reinterpret_cast<const char*>(bytes.data() + 8);
    nlohmann::json header = nlohmann::json::parse(text, text + n, nullptr, false);
    if (header.is_discarded() || !header.is_object())
        throw corrupt_data(fmt::format("{}: the header ({} bytes) is not a JSON object", file, n));

    safetensors_header out;
    out.data_start = 8 + static_cast<std::size_t>(n);
    const std::size_t data_size = bytes.size() - out.data_start;
    for (auto it = header.begin(); it != header.end(); ++it) {
        const std::string& key = it.key();
        const nlohmann::json& v = it.value();
        if (key == "__metadata__") {
            if (!v.is_object()) throw corrupt_data(fmt::format("{}: __metadata__ is not a JSON object", file));
            for (auto m = v.begin(); m != v.end(); ++m) {
                if (!m.value().is_string())
                    throw corrupt_data(fmt::format("{}: __metadata__ entry '{}' is not a string", file, m.key()));
                out.metadata.emplace(m.key(), m.value().get<std::string>());
            }
            continue;
        }
        const std::string where = fmt::format("{}: tensor '{}'", file, key);
        if (!v.is_object()) throw corrupt_data(fmt::format("{}: entry is not a JSON object", where));
        for (auto f = v.begin(); f != v.end(); ++f)
            if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets")
                throw corrupt_data(fmt::format("{}: unknown field '{}'", where, f.key()));
        const auto dt = v.find("dtype"), sh = v.find("shape"), off = v.find("data_offsets");
        if (dt == v.end() || !dt->is_string()) throw corrupt_data(fmt::format("{}: no dtype string", where));
        const std::optional<dtype> type = parse_dtype(dt->get_ref<const std::string&>());
        if (!type) throw corrupt_data(fmt::format("{}: unknown dtype '{}'", where, dt->get_ref<const std::string&>()));
        if (sh == v.end() || !sh->is_array()) throw corrupt_data(fmt::format("{}: no shape array", where));
        if (off == v.end() || !off->is_array() || off->size() != 2)
            throw corrupt_data(fmt::format("{}: data_offsets is not an array [begin, end]", where));
        tensor_info t;
        t.name = key;
        t.type = *type;
        std::size_t elements = 1;
        for (const nlohmann::json& d : *sh) {
            if (!d.is_number_unsigned()) throw corrupt_data(fmt::format("{}: shape entry {} is not a size", where, d.dump()));
            const auto dim = d.get<std::uint64_t>();
            if (dim > static_cast<std::uint64_t>(static_cast<std::size_t>(-1)))
                throw corrupt_data(fmt::format("{}: dimension {} is too large", where, dim));
            t.shape.push_back(static_cast<std::size_t>(dim));
            if (dim != 0 && elements > static_cast<std::size_t>(-1) / dim)
                throw corrupt_data(fmt::format("{}: shape {} has more elements than a size_t holds", where,
                                               shape_string(t.shape)));
            elements *= static_cast<std::size_t>(dim);
        }
        if (!(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
            throw corrupt_data(fmt::format("{}: data_offsets {} are not sizes", where, off->dump()));
        const auto b = (*off)[0].get<std::uint64_t>(), e = (*off)[1].get<std::uint64_t>();
        if (b > e || e > data_size)
            throw corrupt_data(fmt::format("{}: data_offsets [{}, {}] outside the data ({} bytes)", where, b, e, data_size));
        t.begin = static_cast<std::size_t>(b);
        t.end = static_cast<std::size_t>(e);
        if (elements > static_cast<std::size_t>(-1) / dtype_size(t.type) || t.bytes() != elements * dtype_size(t.type))
            throw corrupt_data(fmt::format("{}: {} bytes for {} {} of shape {} (need {} per element)", where, t.bytes(),
                                           elements, dtype_name(t.type), shape_string(t.shape), dtype_size(t.type)));
        out.tensors.push_back(std::move(t));
    }
    std::sort(out.tensors.begin(), out.tensors.end(), [](const tensor_info& a, const tensor_info& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::size_t at = 0;
    for (const tensor_info& t : out.tensors) {
        if (t.begin < at)
            throw corrupt_data(fmt::format("{}: tensor '{}': data_offsets [{}, {}] overlap the tensor before (ends at {})",
                                           file, t.name, t.begin, t.end, at));
        if (t.begin > at)
            throw corrupt_data(fmt::format("{}: tensor '{}': gap of {} bytes before data_offsets [{}, {}]", file, t.name,
                                           t.begin - at, t.begin, t.end));
        at = t.end;
    }
    if (at != data_size)
        throw corrupt_data(fmt::format("{}: the tensors cover {} bytes of data, the file has {}", file, at, data_size));
    return out;
}

// A safetensors file opened for reading: its header parsed and checked, its
// bytes mapped (or read). Tensor views point into the file's bytes and stay
// valid while the file (or storage()) is alive.
class safetensors_file {
public:
    safetensors_file() = default;
    // Opens `path`: mapped when `mmap`, else read. Throws svq::io_error when
    // the file cannot be read, svq::corrupt_data for a malformed header.
    static safetensors_file open(const std::filesystem::path& path, bool mmap = true) {
        return safetensors_file(mapped_file::open(path, mmap));
    }
    explicit safetensors_file(std::shared_ptr<const mapped_file> storage)
        : storage_(std::move(storage)), header_(parse_safetensors_header(storage_->bytes(), storage_->name())) {
        for (std::size_t i = 0; i < header_.tensors.size(); ++i) by_name_.emplace(header_.tensors[i].name, i);
    }

    const std::string& path() const noexcept { return storage_->name(); }
    const std::map<std::string, std::string>& metadata() const noexcept { return header_.metadata; }
    // A metadata entry, or nullptr.
    const std::string* metadata(const std::string& key) const {
        const auto it = header_.metadata.find(key);
        return it == header_.metadata.end() ? nullptr : &it->second;
    }
    // Every tensor, in data order.
    std::span<const tensor_info> tensors() const noexcept { return header_.tensors; }
    const tensor_info* find(const std::string& name) const {
        const auto it = by_name_.find(name);
        return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
    }
    // The tensor `name`; svq::invalid_argument naming the file when absent.
    const tensor_info& at(const std::string& name) const {
        const tensor_info* t = find(name);
        if (t == nullptr) throw invalid_argument(fmt::format("{}: no tensor '{}'", path(), name));
        return *t;
    }
    // The bytes of t (a tensor of this file).
    std::span<const std::byte> data(const tensor_info& t) const noexcept {
        return storage_->bytes().subspan(header_.data_start + t.begin, t.bytes());
    }
    // The file's bytes, shared: a view into them keeps this alive.
    const std::shared_ptr<const mapped_file>& storage() const noexcept { return storage_; }

    // The elements of tensor `name` as floats, from F32, F16, BF16 or F64.
    // Throws svq::invalid_argument naming the file, the tensor and its dtype
    // for any other type.
    std::vector<float> to_float(const std::string& name) const {
        std::vector<float> out(at(name).elements());
        to_float(name, out);
        return out;
    }
    // The same into the caller's buffer (exactly its element count), the
    // conversion split over `threads` (0: all cores): a large tensor goes into
    // memory the caller has prepared (reused, or backed by huge pages)
    // without a page of it touched twice. Throws svq::invalid_argument for a
    // wrong output size or a dtype that is not a float.
    void to_float(const std::string& name, std::span<float> out, unsigned threads = 1) const {
        const tensor_info& t = at(name);
        if (out.size() != t.elements())
            throw invalid_argument(fmt::format("{}: tensor '{}' has {} elements, the output {}", path(), name,
                                               t.elements(), out.size()));
        if (t.type != dtype::f32 && t.type != dtype::f16 && t.type != dtype::bf16 && t.type != dtype::f64)
            throw invalid_argument(fmt::format("{}: tensor '{}' is {}; svq reads F32, F16, BF16 and F64 as floats",
                                               path(), name, dtype_name(t.type)));
        const std::byte* b = data(t).data();
        // Slices of whole 4 kB output pages, converted one dtype loop each.
        const std::size_t page = 1024, pages = (out.size() + page - 1) / page;
        detail::parallel_slices(pages, threads, [&](std::size_t first, std::size_t last) {
            const std::size_t begin = first * page, end = std::min(out.size(), last * page);
            // Element i from its `Stored` bytes (read unaligned) through `to`.
            auto convert = [&]<class Stored>(Stored, auto to) {
                for (std::size_t i = begin; i < end; ++i) {
                    Stored v;
                    std::memcpy(&v, b + sizeof(Stored) * i, sizeof(Stored));
                    out[i] = to(v);
                }
            };
            switch (t.type) {
                case dtype::f32:
                    if (end > begin) std::memcpy(out.data() + begin, b + 4 * begin, 4 * (end - begin));
                    break;
                case dtype::f16: convert(std::uint16_t{}, [](std::uint16_t h) { return half_to_float(h); }); break;
                case dtype::bf16: convert(std::uint16_t{}, [](std::uint16_t h) { return bf16_to_float(h); }); break;
                default: convert(double{}, [](double d) { return static_cast<float>(d); });  // f64
            }
        });
    }

private:
    std::shared_ptr<const mapped_file> storage_;
    safetensors_header header_;
    std::map<std::string, std::size_t> by_name_;
};

// Builds a safetensors file: tensors (copied, or viewed in the caller's
// memory until write) and metadata, written with aligned data.
class safetensors_writer {
public:
    // A tensor copied from `data` (elements * dtype size bytes for `shape`).
    void add(const std::string& name, dtype type, std::vector<std::size_t> shape, std::span<const std::byte> data) {
        entry& e = add_entry(name, type, std::move(shape), data.size());
        e.owned.assign(data.begin(), data.end());
        e.data = e.owned;
    }
    // The same without a copy: `data` must stay valid until write() (or
    // `keep`, when given, keeps it alive).
    void add_view(const std::string& name, dtype type, std::vector<std::size_t> shape, std::span<const std::byte> data,
                  std::shared_ptr<const void> keep = {}) {
        entry& e = add_entry(name, type, std::move(shape), data.size());
        e.data = data;
        e.keep = std::move(keep);
    }
    // Floats stored as F32, F16 or BF16. Throws svq::invalid_argument for
    // another dtype, svq::overflow_error for a finite value F16 cannot hold.
    void add_floats(const std::string& name, std::span<const float> values, std::vector<std::size_t> shape,
                    dtype type = dtype::f32) {
        std::vector<std::byte> bytes(values.size() * dtype_size(type));
        switch (type) {
            case dtype::f32:
                if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
                break;
            case dtype::f16:
            case dtype::bf16:
                for (std::size_t i = 0; i < values.size(); ++i) {
                    if (type == dtype::f16 && std::isfinite(values[i]) && std::fabs(values[i]) > 65504.0f)
                        throw overflow_error(fmt::format("tensor '{}': value {} at {} is outside the F16 range", name,
                                                         values[i], i));
                    const std::uint16_t h = type == dtype::f16 ? float_to_half(values[i]) : float_to_bf16(values[i]);
                    std::memcpy(bytes.data() + 2 * i, &h, 2);
                }
                break;
            default:
                throw invalid_argument(fmt::format("tensor '{}': floats are written as F32, F16 or BF16, not {}", name,
                                                   dtype_name(type)));
        }
        add(name, type, std::move(shape), bytes);
    }
    // A metadata entry (`__metadata__`: strings to strings).
    void set_metadata(const std::string& key, std::string value) { metadata_[key] = std::move(value); }
    // The bytes of tensor `name` as they will be written (empty when absent).
    std::span<const std::byte> data(const std::string& name) const {
        for (const entry& e : entries_)
            if (e.name == name) return e.data;
        return {};
    }
    bool contains(const std::string& name) const {
        return std::any_of(entries_.begin(), entries_.end(), [&](const entry& e) { return e.name == name; });
    }

    // The whole file's bytes.
    std::vector<std::byte> to_bytes() const {
        std::vector<std::byte> out;
        const std::string header = header_text();
        out.resize(8 + header.size());
        const std::uint64_t n = header.size();
        std::memcpy(out.data(), &n, 8);
        std::memcpy(out.data() + 8, header.data(), header.size());
        for (const entry* e : data_order()) out.insert(out.end(), e->data.begin(), e->data.end());
        return out;
    }
    // Writes the file to `path` (through a temporary file renamed at the end,
    // so a reader never sees half a file). Throws svq::io_error.
    void write(const std::filesystem::path& path) const {
        const std::filesystem::path tmp = path.string() + ".tmp";
        {
            std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
            if (!f) throw io_error(fmt::format("{}: cannot open for writing", tmp.string()));
            const std::string header = header_text();
            const std::uint64_t n = header.size();
            f.write(reinterpret_cast<const char*>(&n), 8);
            f.write(header.data(), static_cast<std::streamsize>(header.size()));
            for (const entry* e : data_order())
                f.write(reinterpret_cast<const char*>(e->data.data()), static_cast<std::streamsize>(e->data.size()));
            f.close();
            if (!f) throw io_error(fmt::format("{}: write failed", tmp.string()));
        }
        std::error_code ec;
        std::filesystem::rename(tmp, path, ec);
        if (ec) throw io_error(fmt::format("{}: cannot rename {} to it: {}", path.string(), tmp.string(), ec.message()));
    }

private:
    struct entry {
        std::string name;
        dtype type;
        std::vector<std::size_t> shape;
        std::span<const std::byte> data;
        std::vector<std::byte> owned;
        std::shared_ptr<const void> keep;
    };

    entry& add_entry(const std::string& name, dtype type, std::vector<std::size_t> shape, std::size_t bytes) {
        if (name.empty() || name == "__metadata__")
            throw invalid_argument(fmt::format("safetensors_writer: '{}' is not a tensor name", name));
        if (contains(name)) throw invalid_argument(fmt::format("safetensors_writer: tensor '{}' added twice", name));
        std::size_t elements = 1;
        for (const std::size_t d : shape) elements = detail::checked_mul(elements, d, fmt::format("tensor '{}'", name));
        const std::size_t need = detail::checked_mul(elements, dtype_size(type), fmt::format("tensor '{}'", name));
        if (bytes != need)
            throw invalid_argument(fmt::format("safetensors_writer: tensor '{}' has {} bytes, {} of shape {} needs {}", name,
                                               bytes, dtype_name(type), shape_string(shape), need));
        entries_.push_back(entry{name, type, std::move(shape), {}, {}, {}});
        return entries_.back();
    }
    // Larger elements first (each tensor then starts at a multiple of its
    // element size), insertion order within a size.
    std::vector<const entry*> data_order() const {
        std::vector<const entry*> order;
        for (const entry& e : entries_) order.push_back(&e);
        std::stable_sort(order.begin(), order.end(),
                         [](const entry* a, const entry* b) { return dtype_size(a->type) > dtype_size(b->type); });
        return order;
    }
    std::string header_text() const {
        nlohmann::ordered_json h = nlohmann::ordered_json::object();
        if (!metadata_.empty()) h["__metadata__"] = metadata_;
        std::size_t at = 0;
        for (const entry* e : data_order()) {
            h[e->name] = {{"dtype", dtype_name(e->type)}, {"shape", e->shape}, {"data_offsets", {at, at + e->data.size()}}};
            at += e->data.size();
        }
        std::string text = h.dump();
        text.append((8 - (8 + text.size()) % 8) % 8, ' ');  // the data starts 8-byte aligned
        return text;
    }

    std::vector<entry> entries_;  // an owned entry's span points into `owned`, whose buffer moves with it
    std::map<std::string, std::string> metadata_;
};

}  // namespace svq
