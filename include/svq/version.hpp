// svq's version; CMakeLists.txt's project(VERSION) must match (test_version checks it).
#pragma once

#define SVQ_VERSION_MAJOR 0
#define SVQ_VERSION_MINOR 1
#define SVQ_VERSION_PATCH 0

namespace svq {
inline constexpr int version_major = SVQ_VERSION_MAJOR;
inline constexpr int version_minor = SVQ_VERSION_MINOR;
inline constexpr int version_patch = SVQ_VERSION_PATCH;
}  // namespace svq
