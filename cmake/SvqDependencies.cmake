# Dependencies: the system's packages first (Debian 12: xsimd 8.1, fmt 9.1,
# Eigen 3.4, Catch2 2.13, benchmark 1.7), FetchContent with pinned upstream
# versions as the fallback for online users.
include(FetchContent)

find_package(xsimd QUIET)
include(SvqXsimdFixup)
if(NOT xsimd_FOUND)
    FetchContent_Declare(xsimd GIT_REPOSITORY https://github.com/xtensor-stack/xsimd.git GIT_TAG 13.2.0)
    FetchContent_MakeAvailable(xsimd)
endif()

find_package(fmt QUIET)
if(NOT fmt_FOUND)
    # fmt installs itself only as a top-level project; svq's exported target
    # names fmt::fmt, so install(EXPORT svqTargets) needs fmt's export too.
    if(SVQ_INSTALL)
        set(FMT_INSTALL ON CACHE BOOL "Install the fetched fmt alongside svq")
    endif()
    FetchContent_Declare(fmt GIT_REPOSITORY https://github.com/fmtlib/fmt.git GIT_TAG 11.1.4)
    FetchContent_MakeAvailable(fmt)
endif()

find_package(Eigen3 3.4 QUIET NO_MODULE)
if(NOT Eigen3_FOUND)
    FetchContent_Declare(Eigen3 GIT_REPOSITORY https://gitlab.com/libeigen/eigen.git GIT_TAG 3.4.0)
    set(EIGEN_BUILD_DOC OFF CACHE BOOL "" FORCE)
    set(BUILD_TESTING OFF CACHE BOOL "" FORCE)
    FetchContent_MakeAvailable(Eigen3)
endif()

# The file module (include/svq/io/, target svq::io): nlohmann-json for the
# headers, xxHash (header-only use) for checksums.
find_package(nlohmann_json 3.10 QUIET)
if(NOT nlohmann_json_FOUND)
    if(SVQ_INSTALL)
        set(JSON_Install ON CACHE BOOL "Install the fetched nlohmann-json alongside svq")
    endif()
    FetchContent_Declare(nlohmann_json GIT_REPOSITORY https://github.com/nlohmann/json.git GIT_TAG v3.11.3)
    FetchContent_MakeAvailable(nlohmann_json)
endif()
find_path(SVQ_XXHASH_INCLUDE_DIR xxhash.h)
if(NOT SVQ_XXHASH_INCLUDE_DIR)
    FetchContent_Declare(xxhash GIT_REPOSITORY https://github.com/Cyan4973/xxHash.git GIT_TAG v0.8.2)
    FetchContent_Populate(xxhash)
    set(SVQ_XXHASH_INCLUDE_DIR "${xxhash_SOURCE_DIR}" CACHE PATH "Directory of xxhash.h" FORCE)
    set(SVQ_XXHASH_FETCHED ON)
endif()

# The command-line parser of the tool and the examples (header-only): Debian's
# libcli11-dev (/usr/share/cmake/CLI11/CLI11Config.cmake, target CLI11::CLI11).
if(SVQ_BUILD_TOOLS OR SVQ_BUILD_EXAMPLES)
    find_package(CLI11 CONFIG QUIET)
    if(NOT CLI11_FOUND)
        set(CLI11_PRECOMPILED OFF CACHE BOOL "" FORCE)
        FetchContent_Declare(CLI11 GIT_REPOSITORY https://github.com/CLIUtils/CLI11.git GIT_TAG v2.4.2)
        FetchContent_MakeAvailable(CLI11)
    endif()
endif()

if(SVQ_BUILD_TESTS)
    find_package(Catch2 QUIET)
    if(NOT Catch2_FOUND)
        FetchContent_Declare(Catch2 GIT_REPOSITORY https://github.com/catchorg/Catch2.git GIT_TAG v3.7.1)
        FetchContent_MakeAvailable(Catch2)
    endif()
endif()

if(SVQ_BUILD_BENCHMARKS)
    find_package(benchmark QUIET)
    if(NOT benchmark_FOUND)
        set(BENCHMARK_ENABLE_TESTING OFF CACHE BOOL "" FORCE)
        FetchContent_Declare(benchmark GIT_REPOSITORY https://github.com/google/benchmark.git GIT_TAG v1.9.1)
        FetchContent_MakeAvailable(benchmark)
    endif()
endif()
