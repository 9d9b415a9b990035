// Independent tasks of uneven cost over threads, one index at a time.
//
// core/parallel.hpp cuts [0, n) into contiguous slices, which suits rows of
// one matrix (equal cost). The model-level methods run tasks whose costs
// differ by orders of magnitude (a configuration search on a 64 x 64 matrix
// beside one on a 512 x 64 embedding), so a thread takes the next index when
// it is free. Each task writes only its own output, so results never depend
// on the thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace svq::detail {

// Calls f(i) for i in [0, count) on up to `threads` threads (0: hardware
// concurrency), the first on this thread. After the first exception no new
// index starts; it is rethrown once every thread has stopped.
template <class F>
void parallel_for(std::size_t count, unsigned threads, F&& f) {
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    const std::size_t workers = std::min<std::size_t>(threads, count);
    std::atomic<std::size_t> next{0};
    std::exception_ptr failure;
    std::mutex failure_mutex;
    const auto work = [&] {
        for (std::size_t i = next++; i < count; i = next++) {
            try {
                f(i);
            } catch (...) {
                const std::lock_guard lock(failure_mutex);
                if (!failure) failure = std::current_exception();
                next = count;
            }
        }
    };
    std::vector<std::thread> pool;
    for (std::size_t t = 1; t < workers; ++t) pool.emplace_back(work);
    work();
    for (std::thread& t : pool) t.join();
    if (failure) std::rethrow_exception(failure);
}

}  // namespace svq::detail
