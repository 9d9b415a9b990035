// Splitting independent work over threads (std::thread, no pool).
#pragma once

#include <algorithm>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace svq::detail {

// Calls f(first, end) on `threads` contiguous slices of [0, n), the first on
// this thread (0 threads: std::thread::hardware_concurrency()). f must not
// depend on how [0, n) is cut for its result to be the same for any count.
// An exception thrown by f in any slice is rethrown here, the first one
// caught, after every slice has finished.
template <class F>
void parallel_slices(std::size_t n, unsigned threads, F&& f) {
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    const std::size_t t = std::min<std::size_t>(threads, std::max<std::size_t>(n, 1));
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

}  // namespace svq::detail
