// The llama2 runner's model from a safetensors file: the float checkpoint
// shipped in models/stories260K (scripts/convert_stories260k.py: Hugging Face
// Llama names, the configuration in the metadata) or an svq file made from it
// (`svq quantize`: its quantized matrices are decoded to floats with
// model_file::dequantize, so the forward pass is the float one over the
// decoded weights, bit for bit what the same matrices quantized in memory give).
#pragma once

#include "llama2.hpp"

#include <svq/error.hpp>
#include <svq/io/quantized_file.hpp>
#include <svq/io/safetensors.hpp>

#include <fmt/format.h>

#include <charconv>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

namespace svq::llama2 {

namespace detail {

// Integer metadata entry `key` (a decimal string) of a model file.
inline int metadata_int(const safetensors_file& f, const std::string& key) {
    const std::string* text = f.metadata(key);
    if (text == nullptr) throw corrupt_data(fmt::format("'{}': no metadata '{}' (the model configuration)", f.path(), key));
    int value = 0;
    const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
    if (ec != std::errc() || end != text->data() + text->size())
        throw corrupt_data(fmt::format("'{}': metadata '{}' = '{}' is not an integer", f.path(), key, *text));
    return value;
}

}  // namespace detail

// The configuration from a model file's metadata (dim, hidden_dim, n_layers,
// n_heads, n_kv_heads, vocab_size, seq_len; shared_classifier "true"/"false",
// true when absent).
inline config config_from_metadata(const safetensors_file& f) {
    config c;
    c.dim = detail::metadata_int(f, "dim");
    c.hidden_dim = detail::metadata_int(f, "hidden_dim");
    c.n_layers = detail::metadata_int(f, "n_layers");
    c.n_heads = detail::metadata_int(f, "n_heads");
    c.n_kv_heads = detail::metadata_int(f, "n_kv_heads");
    c.vocab_size = detail::metadata_int(f, "vocab_size");
    c.seq_len = detail::metadata_int(f, "seq_len");
    if (const std::string* shared = f.metadata("shared_classifier")) {
        if (*shared != "true" && *shared != "false")
            throw corrupt_data(fmt::format("'{}': metadata 'shared_classifier' = '{}' is not true or false", f.path(), *shared));
        c.shared_classifier = *shared == "true";
    }
    return c;
}

// Loads a float or an svq file (see the top of this file). Throws
// svq::io_error, or svq::corrupt_data naming the file and what is wrong
// (a missing tensor or metadata entry, a wrong size, a failed checksum).
inline model load_safetensors(const std::filesystem::path& path) {
    const safetensors_file f = safetensors_file::open(path);
    const config c = config_from_metadata(f);
    const std::string source = path.string();
    if (f.metadata("svq.version") == nullptr) {
        return model::from_tensors(c, source, [&](const std::string& name, std::size_t) {
            if (f.find(name) == nullptr) throw corrupt_data(fmt::format("'{}': no tensor '{}'", source, name));
            return f.to_float(name);
        });
    }
    const model_file q(f.storage(), load_options{});
    const std::vector<std::string> list = q.matrices();
    const std::set<std::string> matrices(list.begin(), list.end());
    return model::from_tensors(c, source, [&](const std::string& name, std::size_t) {
        if (matrices.count(name)) return q.dequantize(name);
        if (f.find(name) == nullptr) throw corrupt_data(fmt::format("'{}': no tensor '{}'", source, name));
        return q.tensor(name);
    });
}

}  // namespace svq::llama2
