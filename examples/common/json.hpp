// JSON output of the examples: string escaping, and a file whose open and
// write failures are svq::io_error naming the path.
#pragma once

#include <svq/error.hpp>

#include <fmt/format.h>

#include <cstddef>
#include <cstdio>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>

namespace svq::examples {

// s as the inside of a JSON string: quote, backslash and control characters escaped.
inline std::string json_escape(std::string_view s) {
    std::string out;
    for (const char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
        } else {
            out += c;
        }
    }
    return out;
}

// A text file written with fmt; close() reports a failed write.
class json_file {
public:
    explicit json_file(std::string path) : path_(std::move(path)), f_(std::fopen(path_.c_str(), "w")) {
        if (f_ == nullptr) throw svq::io_error(fmt::format("cannot write '{}'", path_));
    }
    json_file(const json_file&) = delete;
    json_file& operator=(const json_file&) = delete;
    ~json_file() {
        if (f_ != nullptr) std::fclose(f_);
    }

    template <class... Args>
    void print(fmt::format_string<Args...> format, Args&&... args) {
        fmt::print(f_, format, std::forward<Args>(args)...);
    }

    // Each item as element(item) on a line of its own after indent, the lines separated by commas.
    template <class Range, class Element>
    void print_elements(const Range& items, std::string_view indent, Element&& element) {
        std::size_t left = std::size(items);
        for (const auto& item : items) print("{}{}{}\n", indent, element(item), --left > 0 ? "," : "");
    }

    void close() {
        std::FILE* f = std::exchange(f_, nullptr);
        if (f == nullptr) return;
        const bool failed = std::ferror(f) != 0;
        if (std::fclose(f) != 0 || failed) throw svq::io_error(fmt::format("error while writing '{}'", path_));
    }

private:
    std::string path_;
    std::FILE* f_;
};

// A file holding one JSON array, an element(item) a line.
template <class Range, class Element>
void write_json_array(const std::string& path, const Range& items, Element&& element) {
    json_file f(path);
    f.print("[\n");
    f.print_elements(items, "  ", std::forward<Element>(element));
    f.print("]\n");
    f.close();
}

}  // namespace svq::examples
