// Test-side compat: Debian 12 ships Catch2 v2 (single header, we provide
// main in tests/main.cpp); FetchContent users get Catch2 v3 (split headers,
// Catch2WithMain). Tests include this header and use the API both share.
#pragma once

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#define SVQ_CATCH_V3 1
#else
#include <catch2/catch.hpp>
#define SVQ_CATCH_V3 0
#endif
