// The header's version is the CMake project's, and the umbrella header compiles on its own.
#include "catch.hpp"

#include <svq/svq.hpp>

#include <string>

TEST_CASE("svq/version.hpp matches project(VERSION) in CMakeLists.txt") {
    const std::string header = std::to_string(svq::version_major) + "." + std::to_string(svq::version_minor) + "." +
                               std::to_string(svq::version_patch);
    CHECK(header == SVQ_PROJECT_VERSION);
}
