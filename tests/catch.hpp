// Test-side compat: Debian 12 ships Catch2 v2 (single header, we provide
// main in tests/main.cpp); FetchContent users get Catch2 v3 (split headers,
// Catch2WithMain). Tests include this header and write `Catch::Approx` and
// `Catch::Contains(...)`, which this header makes mean the same in both.
#pragma once

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#define SVQ_CATCH_V3 1
#include <string>
namespace Catch {
// v3 renamed the substring matcher.
inline Matchers::StringContainsMatcher Contains(const std::string& text) { return Matchers::ContainsSubstring(text); }
}  // namespace Catch
#else
#include <catch2/catch.hpp>
#define SVQ_CATCH_V3 0
namespace Catch {
// v2 keeps Approx in Catch::Detail (v3: Catch::Approx).
using Detail::Approx;
}  // namespace Catch
#endif
