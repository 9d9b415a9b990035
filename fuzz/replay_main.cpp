// Replays fuzz inputs through the harnesses of fuzz/harnesses.hpp, the same
// entry points the libFuzzer executables call, with any compiler (ctest runs
// it on the committed corpus: fuzz_replay_<harness>).
//
//   svq_fuzz_replay <harness> <file or directory>...
//
// Every regular file (directories: every file in them, recursively, in
// sorted order) is run once; a broken invariant aborts, an exception other
// than svq::error fails. Prints "<harness>: N inputs replayed clean".
#include "harnesses.hpp"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

std::vector<std::uint8_t> read_all(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + p.string());
    return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s <harness> <file or directory>...\nharnesses:", argv[0]);
        for (const auto& h : svq::fuzz::harnesses) std::fprintf(stderr, " %.*s", static_cast<int>(h.name.size()), h.name.data());
        std::fprintf(stderr, "\n");
        return 2;
    }
    const std::string name = argv[1];
    const svq::fuzz::harness_fn h = svq::fuzz::find_harness(name);
    if (h == nullptr) {
        std::fprintf(stderr, "unknown harness '%s'\n", name.c_str());
        return 2;
    }
    std::vector<fs::path> files;
    for (int i = 2; i < argc; ++i) {
        const fs::path p = argv[i];
        if (fs::is_directory(p)) {
            for (const fs::directory_entry& e : fs::recursive_directory_iterator(p))
                if (e.is_regular_file()) files.push_back(e.path());
        } else if (fs::is_regular_file(p)) {
            files.push_back(p);
        } else {
            std::fprintf(stderr, "%s: not a file or directory\n", p.c_str());
            return 2;
        }
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) {
        std::fprintf(stderr, "%s: no inputs\n", name.c_str());
        return 2;
    }
    std::size_t done = 0;
    for (const fs::path& p : files) {
        try {
            const std::vector<std::uint8_t> bytes = read_all(p);
            svq::fuzz::current_input = p.string();
            svq::fuzz::run_harness(h, bytes.data(), bytes.size());
        } catch (const std::exception& e) {
            std::fprintf(stderr, "%s: %s: uncaught %s\n", name.c_str(), p.c_str(), e.what());
            return 1;
        } catch (...) {
            std::fprintf(stderr, "%s: %s: uncaught exception of unknown type\n", name.c_str(), p.c_str());
            return 1;
        }
        ++done;
    }
    std::printf("%s: %zu inputs replayed clean\n", name.c_str(), done);
    return 0;
}
