// The command line of hessian_quantize and crvq_quantize. Both quantize
// stories260K's layers against their calibration activations (or a
// synthetic layer with synthetic activations) and take the same options:
// --json FILE, --data DIR, a flag that keeps to the synthetic set
// (--synthetic in one, --synthetic-only in the other) and --threads T.
#pragma once

#include <common/args.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <utility>

namespace svq::examples {

struct calibration_options {
    std::optional<std::string> json;            // --json FILE
    std::filesystem::path data = SVQ_DATA_DIR;  // --data DIR
    bool synthetic = false;                     // the synthetic flag: no real data even when DIR has it
    unsigned threads = 1;                       // --threads T: GPTQ threads, 0 for all cores

    // Reads argv as arg_parser::parse does (--help exits 0, a bad argument throws).
    static calibration_options parse(int argc, char** argv, std::string program, std::string synthetic_flag,
                                     std::string about) {
        calibration_options o;
        arg_parser p(std::move(program), std::move(about));
        p.json_option(o.json, "the rows")
            .data_option(o.data, "stories260K.bin")
            .flag(std::move(synthetic_flag), o.synthetic, "the synthetic set only, even with the data in DIR")
            .option("--threads", "T", o.threads, "GPTQ threads, 0 for all cores");
        p.parse(argc, argv);
        return o;
    }
};

}  // namespace svq::examples
