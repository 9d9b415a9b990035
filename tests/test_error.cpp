#include "catch.hpp"

#include <svq/error.hpp>

#include <type_traits>

TEST_CASE("every svq exception derives from svq::error and std::exception") {
    STATIC_REQUIRE(std::is_base_of_v<svq::error, svq::invalid_argument>);
    STATIC_REQUIRE(std::is_base_of_v<svq::error, svq::overflow_error>);
    STATIC_REQUIRE(std::is_base_of_v<svq::error, svq::corrupt_data>);
    STATIC_REQUIRE(std::is_base_of_v<svq::error, svq::io_error>);
    STATIC_REQUIRE(std::is_base_of_v<std::runtime_error, svq::error>);
    try {
        throw svq::overflow_error("N=3 K=7 needs 99 bits");
    } catch (const svq::error& e) {
        REQUIRE(std::string(e.what()) == "N=3 K=7 needs 99 bits");
    }
}
