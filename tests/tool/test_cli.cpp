// The svq command-line tool (tools/svq.cpp), run as a program on the shipped
// model (models/stories260K): quantize at 3.25 bpw on 2 threads -> info ->
// dequantize -> compare (and the trellis method: quantize -> info -> compare
// -> bench), every number checked against the library in memory
// (the same svq::quantize call gives the same SQNR, bit for bit), and every
// error path: exit code and the one line it writes on stderr.
//
// SVQ_TOOL is the binary's path, SVQ_MODEL_DIR the shipped model's directory
// (tests/CMakeLists.txt defines both).
#include "common/llama2_safetensors.hpp"

#include <svq/io/checkpoint.hpp>
#include <svq/io/quantized_file.hpp>
#include <svq/matrix/metrics.hpp>
#include <svq/quantize.hpp>
#include <svq/trellis/trellis.hpp>

#include "catch.hpp"
#include "support.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

const fs::path model = fs::path(SVQ_MODEL_DIR) / "model.safetensors";

// A fresh directory under the system's temporary one, removed at the end.
using svq::test::temp_dir;

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

struct result {
    int code = -1;
    std::string out, err;
};

// Runs `svq <args>` through the shell (arguments are quoted by the caller),
// capturing its exit code, stdout and stderr.
result svq_run(const temp_dir& dir, const std::string& args) {
    const std::string out = dir / "stdout.txt", err = dir / "stderr.txt";
    const std::string cmd = fmt::format("'{}' {} >'{}' 2>'{}'", SVQ_TOOL, args, out, err);
    const int status = std::system(cmd.c_str());
    result r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
}

std::string q(const std::string& s) { return fmt::format("'{}'", s); }

std::size_t lines(const std::string& s) {
    std::size_t n = 0;
    for (char c : s) n += c == '\n';
    return n;
}

}  // namespace

TEST_CASE("svq quantize -> info -> dequantize -> compare on stories260K equals the library in memory", "[cli][e2e]") {
    REQUIRE(fs::exists(model));
    temp_dir dir("cli_e2e");
    const std::string qfile = dir / "q.safetensors", dfile = dir / "d.safetensors";

    const result quantized = svq_run(dir, "quantize " + q(model.string()) + " -o " + q(qfile) + " --bpw 3.25 --threads 2");
    INFO(quantized.err);
    REQUIRE(quantized.code == 0);
    CHECK(quantized.out.find("36 quantized") != std::string::npos);
    // Not a terminal: one progress line per quantized tensor.
    CHECK(lines(quantized.err) == 36);

    const result info = svq_run(dir, "info " + q(qfile) + " --json");
    REQUIRE(info.code == 0);
    const nlohmann::json ij = nlohmann::json::parse(info.out);
    CHECK(ij["checksum_failures"] == 0);
    CHECK(ij["tensors"].size() == 47);
    CHECK(ij["quantized_weights"] == 259328);
    CHECK(ij["quantized_bpw"].get<double>() <= 3.25);
    CHECK(ij["file_bytes"].get<std::uintmax_t>() == fs::file_size(qfile));
    for (const auto& t : ij["tensors"]) {
        CHECK(t["checksum"] == "ok");
        if (t["method"] == "pvq") CHECK(t["bpw"].get<double>() <= 3.25);
    }

    const result deq = svq_run(dir, "dequantize " + q(qfile) + " -o " + q(dfile));
    REQUIRE(deq.code == 0);

    const result cmp = svq_run(dir, "compare " + q(model.string()) + " " + q(qfile) + " --json");
    REQUIRE(cmp.code == 0);
    const nlohmann::json cj = nlohmann::json::parse(cmp.out);
    const result cmp_d = svq_run(dir, "compare " + q(model.string()) + " " + q(dfile) + " --json");
    REQUIRE(cmp_d.code == 0);
    const nlohmann::json dj = nlohmann::json::parse(cmp_d.out);
    REQUIRE(cj["tensors"].size() == 47);
    REQUIRE(dj["tensors"].size() == 47);

    // The library, in memory, the same configuration: the same SQNR to the last bit,
    // and the dequantized file holds exactly the decoded matrix.
    const svq::checkpoint ref = svq::checkpoint::open(model);
    const svq::safetensors_file back = svq::safetensors_file::open(dfile);
    std::size_t matrices = 0;
    for (std::size_t i = 0; i < cj["tensors"].size(); ++i) {
        const auto& t = cj["tensors"][i];
        const std::string name = t["name"];
        INFO(name);
        CHECK(dj["tensors"][i]["name"] == name);
        const svq::tensor_info& info_t = ref.info(name);
        const std::vector<float> w = ref.to_float(name);
        if (info_t.shape.size() != 2) {
            CHECK(t["sqnr_db"] == "inf");  // kept exactly
            CHECK(back.to_float(name) == w);
            continue;
        }
        ++matrices;
        const svq::quantized_matrix m = svq::quantize(w, info_t.shape[0], info_t.shape[1], {.target_bpw = 3.25});
        const std::vector<float> decoded = m.dequantize();
        const double sqnr = svq::sqnr_db(w, decoded);
        CHECK(t["sqnr_db"].get<double>() == sqnr);
        CHECK(dj["tensors"][i]["sqnr_db"].get<double>() == sqnr);
        CHECK(back.to_float(name) == decoded);
        CHECK(t["quantized"] == true);
    }
    CHECK(matrices == 36);

    // The llama2 runner on the tool's file: the perplexity of the model
    // quantized in memory with the same calls, on sequences the float model samples.
    const svq::llama2::model from_file = svq::llama2::load_safetensors(qfile);
    const svq::llama2::model reference = svq::llama2::load_safetensors(model);
    svq::llama2::model in_memory = svq::llama2::load_safetensors(model);
    for (svq::llama2::linear_ref& l : in_memory.linears()) {
        const svq::quantized_matrix m = svq::quantize(l.weights, static_cast<std::size_t>(l.rows),
                                                      static_cast<std::size_t>(l.cols), {.target_bpw = 3.25});
        const std::vector<float> decoded = m.dequantize();
        std::copy(decoded.begin(), decoded.end(), l.weights.begin());
    }
    {
        const std::span<float> e = in_memory.mutable_token_embedding();
        const std::vector<float> w(e.begin(), e.end());
        const std::vector<float> decoded = svq::quantize(w, 512, 64, {.target_bpw = 3.25}).dequantize();
        std::copy(decoded.begin(), decoded.end(), e.begin());
    }
    const auto sequences = svq::llama2::sample_sequences(reference, 4, 64, 3, 1.0f);
    const double nll_file = svq::llama2::evaluate_sequences(from_file, sequences).mean_nll;
    CHECK(nll_file == svq::llama2::evaluate_sequences(in_memory, sequences).mean_nll);
    CHECK(nll_file > svq::llama2::evaluate_sequences(reference, sequences).mean_nll);
}

TEST_CASE("svq quantize --method trellis -> info -> compare -> bench equals the library in memory", "[cli][e2e]") {
    REQUIRE(fs::exists(model));
    temp_dir dir("cli_trellis");
    const std::string qfile = dir / "t.safetensors";
    const result quantized =
        svq_run(dir, "quantize " + q(model.string()) + " -o " + q(qfile) + " --bpw 4 --method trellis --state-bits 10");
    INFO(quantized.err);
    REQUIRE(quantized.code == 0);
    CHECK(quantized.out.find("36 quantized") != std::string::npos);

    const result info = svq_run(dir, "info " + q(qfile) + " --json");
    REQUIRE(info.code == 0);
    const nlohmann::json ij = nlohmann::json::parse(info.out);
    CHECK(ij["checksum_failures"] == 0);
    CHECK(ij["quantized_bpw"].get<double>() <= 4.0);
    std::size_t trellis = 0;
    for (const auto& t : ij["tensors"]) {
        CHECK(t["checksum"] == "ok");
        if (t["method"] != "trellis") continue;
        ++trellis;
        CHECK(t["bpw"].get<double>() <= 4.0);
        CHECK(t["config"].get<std::string>().find("L=10") != std::string::npos);
    }
    CHECK(trellis == 36);

    // The library in memory: the same SQNR to the last bit.
    const result cmp = svq_run(dir, "compare " + q(model.string()) + " " + q(qfile) + " --json");
    REQUIRE(cmp.code == 0);
    const nlohmann::json cj = nlohmann::json::parse(cmp.out);
    const svq::checkpoint ref = svq::checkpoint::open(model);
    std::size_t checked = 0;
    for (const auto& t : cj["tensors"]) {
        const std::string name = t["name"];
        const svq::tensor_info& info_t = ref.info(name);
        if (info_t.shape.size() != 2) continue;
        INFO(name);
        const std::size_t rows = info_t.shape[0], cols = info_t.shape[1];
        const std::vector<float> w = ref.to_float(name);
        const svq::trellis_matrix m =
            svq::quantize_trellis(w, rows, cols, svq::trellis_config_for(rows, cols, 4.0, 10));
        CHECK(t["sqnr_db"].get<double>() == svq::sqnr_db(w, m.dequantize()));
        ++checked;
    }
    CHECK(checked == 36);

    const result bench = svq_run(dir, "bench " + q(qfile) + " --min-time 0.001");
    INFO(bench.err);
    REQUIRE(bench.code == 0);
    CHECK(bench.out.find("trellis") != std::string::npos);
}

TEST_CASE("svq: every error exits non-zero with one line on stderr naming it", "[cli][errors]") {
    REQUIRE(fs::exists(model));
    temp_dir dir("cli_errors");
    const std::string m = q(model.string()), out = q(dir / "out.safetensors");
    struct error_case {
        const char* what;
        std::string args;
        int code;
        std::string message;
    };
    const std::vector<error_case> cases = {
        {"unknown option", "quantize " + m + " -o " + out + " --bpw 3 --bogus", 2, "--bogus"},
        {"missing value", "quantize " + m + " -o " + out + " --bpw", 2, "--bpw"},
        {"value not a number", "quantize " + m + " -o " + out + " --bpw abc", 2, "abc"},
        {"missing required option", "quantize " + m + " --bpw 3", 2, "--output"},
        {"unknown command", "frobnicate", 2, "unknown command 'frobnicate'"},
        {"no command", "", 2, "subcommand is required"},
        {"missing input path", "quantize " + q(dir / "nope.safetensors") + " -o " + out + " --bpw 3", 1,
         dir / "nope.safetensors" + ": no such file or directory"},
        {"unwritable output (no directory)", "quantize " + m + " -o " + q(dir / "no/such/dir/x.safetensors") + " --bpw 3", 1,
         "cannot write: directory"},
        {"unwritable output (a directory)", "quantize " + m + " -o " + q(dir.path.string()) + " --bpw 3", 1,
         "output path is a directory"},
        {"bad --tensor-bpw syntax", "quantize " + m + " -o " + out + " --bpw 3 --tensor-bpw abc", 1,
         "--tensor-bpw 'abc': expected REGEX=BPW"},
        {"bad --tensor-bpw value", "quantize " + m + " -o " + out + " --bpw 3 --tensor-bpw 'q_proj=x'", 1,
         "'x' is not a number"},
        {"bad regex", "quantize " + m + " -o " + out + " --bpw 3 --include '('", 1, "--include '(': bad regular expression"},
        {"bad regex in --tensor-bpw", "quantize " + m + " -o " + out + " --bpw 3 --tensor-bpw '[=2'", 1,
         "--tensor-bpw '[': bad regular expression"},
        {"unknown method", "quantize " + m + " -o " + out + " --bpw 3 --method foo", 1, "--method 'foo'"},
        {"trellis state bits out of range", "quantize " + m + " -o " + out + " --bpw 3 --method trellis --state-bits 17", 1,
         "--state-bits 17"},
        {"state bits without trellis", "quantize " + m + " -o " + out + " --bpw 3 --state-bits 12", 1,
         "--state-bits applies to --method trellis, not 'pvq'"},
        {"hessian without calibration", "quantize " + m + " -o " + out + " --bpw 3 --method hessian", 1, "--calibration"},
        {"bpw out of range", "quantize " + m + " -o " + out + " --bpw -1", 1, "--bpw -1"},
        {"info: missing file", "info " + q(dir / "nope"), 1, "no such file or directory"},
        {"dequantize: bad dtype", "dequantize " + m + " -o " + out + " --dtype f64", 1, "--dtype 'f64'"},
        {"bench: not an svq file", "bench " + m, 1, "not an svq file"},
    };
    for (const error_case& c : cases) {
        INFO(c.what << ": svq " << c.args);
        const result r = svq_run(dir, c.args);
        INFO("stderr: " << r.err);
        CHECK(r.code == c.code);
        CHECK(lines(r.err) == 1);
        CHECK(r.err.starts_with("svq: error: "));
        CHECK(r.err.find(c.message) != std::string::npos);
        CHECK(r.out.empty());
    }
    CHECK_FALSE(fs::exists(dir / "out.safetensors"));

    // --help on every command: exit 0, the options with their defaults on stdout.
    for (const char* cmd : {"", "quantize ", "info ", "dequantize ", "compare ", "bench "}) {
        const result r = svq_run(dir, std::string(cmd) + "--help");
        INFO(cmd);
        CHECK(r.code == 0);
        CHECK(r.err.empty());
        CHECK(r.out.find("Usage: svq") != std::string::npos);
    }
    // The line of `option` in a help text shows `value` (CLI11 2.1 prints
    // "--threads UINT=1", later versions "--threads UINT [1]").
    auto shows_default = [&](const std::string& command, const std::string& option, const std::string& value) {
        const std::string text = svq_run(dir, command + " --help").out;
        const std::size_t at = text.find("  " + option + " ");
        if (at == std::string::npos) return false;
        const std::string line = text.substr(at, text.find('\n', at) - at);
        return line.find("=" + value) != std::string::npos || line.find("[" + value + "]") != std::string::npos;
    };
    CHECK(shows_default("quantize", "--method", "pvq"));
    CHECK(shows_default("quantize", "--threads", "1"));
    CHECK(shows_default("quantize", "--damping", "0.01"));
    CHECK(shows_default("dequantize", "--dtype", "f32"));
    CHECK(shows_default("bench", "--threads", "1"));
    CHECK(shows_default("bench", "--min-time", "0.05"));
    const result help = svq_run(dir, "quantize --help");
    for (const char* text : {"--tensor-bpw", "--include", "--exclude", "--calibration", "--speed", "--bpw", "--output",
                             "--state-bits"})
        CHECK(help.out.find(text) != std::string::npos);
}
