// The trained model and text under SVQ_DATA_DIR, shared by the tests that use
// them (each skips, and says so, when they are absent), and a string helper
// of their messages.
#pragma once

#include "common/llama2.hpp"

#include <filesystem>
#include <string>

namespace svq::test {

inline const std::filesystem::path data_dir{SVQ_DATA_DIR};
inline const std::filesystem::path stories_model_path = data_dir / "stories260K.bin";

// stories260K, loaded once per test process (the caller checks that the file exists).
inline const svq::llama2::model& stories_model() {
    static const svq::llama2::model m = svq::llama2::model::load(stories_model_path);
    return m;
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace svq::test
