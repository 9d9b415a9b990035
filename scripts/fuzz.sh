#!/usr/bin/env bash
# Builds svq's libFuzzer harnesses with clang-15 (ASan + UBSan) and runs each
# for a bounded time on a copy of the committed seed corpus (docs/fuzzing.md).
#
#   scripts/fuzz.sh [seconds per harness (60)] [build dir (build-fuzz)]
#
# Needs clang-15 and libfuzzer-15-dev (Debian 12: apt-get install clang-15
# libfuzzer-15-dev); CXX overrides the compiler, SVQ_FUZZ_BUILD_JOBS the
# build's parallelism and how many fuzzers run at once (2). New inputs go to
# <build dir>/fuzz-work/<harness>/corpus, never into fuzz/corpus; a crash's
# input is left in <build dir>/fuzz-work/<harness>/ (crash-*, leak-*,
# timeout-*, oom-*). Exits non-zero when a harness fails.
set -euo pipefail

seconds=${1:-60}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${2:-$root/build-fuzz}
case $build in /*) ;; *) build=$PWD/$build ;; esac
harnesses=(safetensors svq_metadata row_decoder npy)
jobs=${SVQ_FUZZ_BUILD_JOBS:-2}

: "${CXX:=clang++-15}"
start=$(date +%s)

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$CXX" \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DSVQ_FUZZ=ON -DSVQ_BUILD_TESTS=OFF -DSVQ_BUILD_BENCHMARKS=OFF -DSVQ_BUILD_EXAMPLES=OFF -DSVQ_INSTALL=OFF
# All harnesses in one parallel build; when that fails, each on its own, so
# that one that does not compile fails alone and the others still run.
status=0
summary=()
runnable=()
targets=("${harnesses[@]/#/svq_fuzz_}")
if cmake --build "$build" -j"$jobs" --target "${targets[@]}" >"$build/build.log" 2>&1; then
    runnable=("${harnesses[@]}")
else
    for h in "${harnesses[@]}"; do
        if cmake --build "$build" -j"$jobs" --target "svq_fuzz_$h" >"$build/build-$h.log" 2>&1; then
            runnable+=("$h")
        else
            status=1
            grep -m 5 -E 'error' "$build/build-$h.log" || true
            summary+=("$h: BUILD FAILED (log: $build/build-$h.log)")
        fi
    done
fi
built=$(date +%s)

symbolizer=$(command -v llvm-symbolizer-15 || command -v llvm-symbolizer || echo /usr/lib/llvm-15/bin/llvm-symbolizer)
[[ -x $symbolizer ]] && export ASAN_SYMBOLIZER_PATH=$symbolizer UBSAN_SYMBOLIZER_PATH=$symbolizer
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# One fuzzer per build job at a time (each is single-threaded).
run_one() {
    local h=$1 work=$build/fuzz-work/$1
    rm -rf "$work"
    mkdir -p "$work/corpus"
    cp -R "$root/fuzz/corpus/$h/." "$work/corpus/"
    local rc=0
    (cd "$work" && "$build/fuzz/svq_fuzz_$h" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 "$work/corpus") >"$work/fuzz.log" 2>&1 || rc=$?
    echo "$rc" >"$work/rc"
}
pids=()
for h in "${runnable[@]}"; do
    echo "== $h: ${seconds}s (log: $build/fuzz-work/$h/fuzz.log)"
    run_one "$h" &
    pids+=($!)
    if [[ ${#pids[@]} -ge $jobs ]]; then
        wait "${pids[0]}"
        pids=("${pids[@]:1}")
    fi
done
wait
total=0
for h in "${runnable[@]}"; do
    work=$build/fuzz-work/$h
    log=$work/fuzz.log
    rc=$(cat "$work/rc")
    runs=$(sed -n 's/^Done \([0-9]*\) runs in .*/\1/p' "$log" | tail -1)
    if [[ $rc -ne 0 ]]; then
        status=1
        artifacts=$(cd "$work" && ls crash-* leak-* timeout-* oom-* 2>/dev/null | sed "s|^|$work/|" | tr '\n' ' ' || true)
        tail -n 60 "$log"
        summary+=("$h: FAILED (exit $rc) after ${runs:-?} runs; reproducer: ${artifacts:-none}")
    else
        summary+=("$h: ${runs:-?} runs clean")
        total=$((total + ${runs:-0}))
    fi
done
end=$(date +%s)
echo "== summary (clang: $("$CXX" --version | head -1); build $((built - start))s, runs $((end - built))s, total $((end - start))s)"
printf '  %s\n' "${summary[@]}"
if [[ $status -eq 0 ]]; then
    echo "fuzz: ${#runnable[@]} harnesses, $total executions clean, ${seconds}s each"
else
    echo "fuzz: FAILED (see above); $total executions clean in the harnesses that passed"
fi
exit $status
