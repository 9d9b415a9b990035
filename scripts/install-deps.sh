#!/usr/bin/env bash
# Installs what building svq, its tests, benchmarks and examples needs on a
# Debian 12 machine: the compiler, CMake and the five libraries below, all
# from Debian's own archive (nothing else is downloaded). Uses sudo only when
# not already root, so the same command works for people and for CI (root).
set -euo pipefail

packages=(build-essential cmake libxsimd-dev catch2 libfmt-dev libbenchmark-dev libeigen3-dev)

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
