// Splitting independent work over threads (std::thread, no pool).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace svq::detail {

// A thread count as the callers take it: 0 means all cores.
inline unsigned thread_count(unsigned threads) noexcept {
    return threads != 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
}

// Calls f(first, end) on `threads` contiguous slices of [0, n), the first on
// this thread (0 threads: std::thread::hardware_concurrency()). f must not
// depend on how [0, n) is cut for its result to be the same for any count.
// An exception thrown by f in any slice is rethrown here, the first one
// caught, after every slice has finished.
template <class F>
void parallel_slices(std::size_t n, unsigned threads, F&& f) {
    const std::size_t t = std::min<std::size_t>(thread_count(threads), std::max<std::size_t>(n, 1));
    if (t <= 1) {
        f(std::size_t{0}, n);
        return;
    }
    std::exception_ptr error;
    std::mutex error_mutex;
    const auto slice = [&](std::size_t k) {
        try {
            f(k * n / t, (k + 1) * n / t);
        } catch (...) {
            const std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
        }
    };
    std::vector<std::thread> pool;
    for (std::size_t k = 1; k < t; ++k) pool.emplace_back(slice, k);
    slice(0);
    for (std::thread& th : pool) th.join();
    if (error) std::rethrow_exception(error);
}

// Calls f(state, first, end) on the consecutive chunks of [0, n) of `chunk`
// items (the last one shorter), handed out one at a time to `threads`
// threads (0: all cores) as each finishes its previous chunk, so a core that
// runs slower (another process on it, a slower core) or a chunk that costs
// more does not hold up the end. Each thread makes its own state once,
// state = init(), and passes it to every chunk it takes (buffers allocated
// once per thread, not per chunk). Same contract as parallel_slices: f must
// not depend on how [0, n) is cut. After the first exception no new chunk
// starts; it is rethrown here once every thread has stopped.
template <class Init, class F>
void parallel_chunks(std::size_t n, unsigned threads, std::size_t chunk, Init&& init, F&& f) {
    threads = thread_count(threads);
    chunk = std::max<std::size_t>(chunk, 1);
    const std::size_t chunks = (n + chunk - 1) / chunk;
    if (threads <= 1 || chunks <= 1) {
        auto state = init();
        f(state, std::size_t{0}, n);
        return;
    }
    std::atomic<std::size_t> next{0};
    parallel_slices(std::min<std::size_t>(threads, chunks), threads, [&](std::size_t, std::size_t) {
        auto state = init();
        for (std::size_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
             c = next.fetch_add(1, std::memory_order_relaxed)) {
            try {
                f(state, c * chunk, std::min(n, (c + 1) * chunk));
            } catch (...) {
                next.store(chunks, std::memory_order_relaxed);  // no thread starts another chunk
                throw;                                          // parallel_slices keeps the first one
            }
        }
    });
}

// The same without a state: f(first, end).
template <class F>
void parallel_chunks(std::size_t n, unsigned threads, std::size_t chunk, F&& f) {
    struct none {};
    parallel_chunks(
        n, threads, chunk, [] { return none{}; }, [&](none&, std::size_t first, std::size_t end) { f(first, end); });
}

// Rows per chunk of the decoders' parallel_chunks: eight chunks per thread
// or more, at most 64 rows (a few hundred microseconds of decoding), at least one.
inline std::size_t chunk_rows(std::size_t rows, unsigned threads) noexcept {
    return std::clamp<std::size_t>(rows / (8 * std::size_t{thread_count(threads)}), 1, 64);
}

}  // namespace svq::detail
