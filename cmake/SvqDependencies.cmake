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
