// A checkpoint of float tensors to quantize: one .safetensors file, a sharded
// one (its model.safetensors.index.json: {"metadata": {...}, "weight_map":
// {tensor: shard file}}), or a .npy file (one tensor, named by the file's
// stem). Tensors are read as floats from F32, F16, BF16 or F64.
#pragma once

#include <svq/error.hpp>
#include <svq/io/mapped_file.hpp>
#include <svq/io/npy.hpp>
#include <svq/io/safetensors.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace svq {

class checkpoint {
public:
    // Opens `path`: a .safetensors file, a *.index.json of shards (each shard
    // mapped when `mmap`), a .npy file, or a directory holding
    // model.safetensors or model.safetensors.index.json. Throws svq::io_error
    // or svq::corrupt_data naming the file.
    static checkpoint open(const std::filesystem::path& path, bool mmap = true) {
        namespace fs = std::filesystem;
        checkpoint c;
        fs::path p = path;
        if (fs::is_directory(p)) {
            if (fs::exists(p / "model.safetensors.index.json")) p = p / "model.safetensors.index.json";
            else if (fs::exists(p / "model.safetensors")) p = p / "model.safetensors";
            else throw io_error(fmt::format("{}: no model.safetensors or model.safetensors.index.json in it", path.string()));
        }
        const std::string name = p.filename().string();
        if (name.ends_with(".npy")) {
            npy_array a = read_npy(p);
            tensor_info t;
            t.name = p.stem().string();
            t.type = dtype::f32;
            t.shape = a.shape;
            t.end = a.values.size() * 4;
            c.npy_ = std::make_shared<npy_array>(std::move(a));
            c.order_.push_back(t.name);
            c.npy_info_ = t;
            return c;
        }
        if (name.ends_with(".json")) {
            const auto f = mapped_file::open(p, false);
            const auto* text = reinterpret_cast<const char*>(f->bytes().data());
            const nlohmann::json index = nlohmann::json::parse(text, text + f->size(), nullptr, false);
            if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
                throw corrupt_data(fmt::format("{}: not a JSON object with a 'weight_map' object", p.string()));
            std::map<std::string, std::size_t> shard_of_file;
            for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
                if (!it.value().is_string())
                    throw corrupt_data(fmt::format("{}: weight_map['{}'] is not a file name", p.string(), it.key()));
                const fs::path shard = it.value().get<std::string>();
                if (shard.empty() || shard.is_absolute() || shard.has_parent_path())
                    throw corrupt_data(fmt::format("{}: weight_map['{}'] = '{}' is not a file beside the index", p.string(),
                                                   it.key(), shard.string()));
                auto [pos, added] = shard_of_file.emplace(shard.string(), c.shards_.size());
                if (added) c.shards_.push_back(safetensors_file::open(p.parent_path() / shard, mmap));
                const safetensors_file& s = c.shards_[pos->second];
                if (s.find(it.key()) == nullptr)
                    throw corrupt_data(fmt::format("{}: tensor '{}' is not in its shard {}", p.string(), it.key(), s.path()));
                c.where_[it.key()] = pos->second;
            }
            for (const safetensors_file& s : c.shards_)
                for (const tensor_info& t : s.tensors())
                    if (c.where_.count(t.name) && &c.shards_[c.where_[t.name]] == &s) c.order_.push_back(t.name);
            return c;
        }
        c.shards_.push_back(safetensors_file::open(p, mmap));
        for (const tensor_info& t : c.shards_.front().tensors()) {
            c.where_[t.name] = 0;
            c.order_.push_back(t.name);
        }
        return c;
    }

    // Every tensor's name (file order, shard by shard).
    const std::vector<std::string>& names() const noexcept { return order_; }
    bool contains(const std::string& name) const { return npy_ ? name == order_.front() : where_.count(name) != 0; }
    // Its dtype and shape. Throws svq::invalid_argument for an unknown name.
    const tensor_info& info(const std::string& name) const {
        if (npy_ && name == order_.front()) return npy_info_;
        return shard(name).at(name);
    }
    // Its elements as floats.
    std::vector<float> to_float(const std::string& name) const {
        if (npy_ && name == order_.front()) return npy_->values;
        return shard(name).to_float(name);
    }
    // The same into the caller's buffer (exactly its element count), the
    // conversion split over `threads` (safetensors_file::to_float).
    void to_float(const std::string& name, std::span<float> out, unsigned threads = 1) const {
        if (npy_ && name == order_.front()) {
            if (out.size() != npy_->values.size())
                throw invalid_argument(fmt::format("checkpoint: array '{}' has {} elements, the output {}", name,
                                                   npy_->values.size(), out.size()));
            std::copy(npy_->values.begin(), npy_->values.end(), out.begin());
            return;
        }
        shard(name).to_float(name, out, threads);
    }
    // Its file (a shard, or the file opened) when it is in a safetensors file, else null.
    const safetensors_file* file_of(const std::string& name) const {
        const auto it = where_.find(name);
        return it == where_.end() ? nullptr : &shards_[it->second];
    }

private:
    const safetensors_file& shard(const std::string& name) const {
        const auto it = where_.find(name);
        if (it == where_.end()) throw invalid_argument(fmt::format("checkpoint: no tensor '{}'", name));
        return shards_[it->second];
    }

    std::vector<safetensors_file> shards_;
    std::map<std::string, std::size_t> where_;
    std::vector<std::string> order_;
    std::shared_ptr<npy_array> npy_;
    tensor_info npy_info_;
};

}  // namespace svq
