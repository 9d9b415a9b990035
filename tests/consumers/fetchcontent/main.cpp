// Built with svq's source tree through FetchContent and run by ctest:
// proves the headers, include directory, C++20 requirement and
// dependency targets (fmt is a compiled library, so linking is checked too).
#include <svq/error.hpp>
// Once the umbrella header exists this one line becomes #include <svq/svq.hpp>,
// which makes this program compile the whole public surface as a user would.
#include <svq/simd/compat.hpp>

#include <fmt/format.h>

#include <cstdio>
#include <string>

static_assert(__cplusplus >= 202002L, "svq::svq must give its users C++20 (cxx_std_20)");

int main() {
    std::string message;
    try {
        throw svq::invalid_argument(fmt::format("group size {} must be positive", 0));
    } catch (const svq::error& e) {
        message = e.what();
    }
    if (message != "group size 0 must be positive") {
        std::fprintf(stderr, "unexpected svq::error message: '%s'\n", message.c_str());
        return 1;
    }
    const std::string arch(svq::simd::arch_name());
    std::printf("svq FetchContent consumer: ok (simd arch %s)\n", arch.c_str());
    return 0;
}
