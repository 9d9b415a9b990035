#!/usr/bin/env bash
# Installs what building svq, its tests, benchmarks and examples needs on a
# Debian 12 machine: the compiler, CMake and the libraries below, all from
# Debian's own archive (nothing else is downloaded): nlohmann-json3-dev and
# libxxhash-dev for svq::io, libcli11-dev for the command-line tool (tools/),
# clang-15 and libfuzzer-15-dev for the fuzzers,
# python3-numpy for the independent Python reader test (ctest python_reader,
# skipped without it).
# Uses sudo only when not already root, so the same command works for people
# and for CI (root).
set -euo pipefail

packages=(build-essential cmake libxsimd-dev catch2 libfmt-dev libbenchmark-dev libeigen3-dev
          nlohmann-json3-dev libxxhash-dev libcli11-dev clang-15 libfuzzer-15-dev python3-numpy)

if [[ "$(id -u)" -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install-deps.sh: not root and sudo is missing; as root run:" >&2
    echo "  apt-get update && apt-get install -y ${packages[*]}" >&2
    exit 1
fi

# env passes DEBIAN_FRONTEND through sudo, which resets the environment.
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
