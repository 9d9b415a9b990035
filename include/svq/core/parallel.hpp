// Splitting independent work over threads (std::thread, no pool).
#pragma once

#include <algorithm>
#include <cstddef>
#include <thread>
#include <vector>

namespace svq::detail {

// Calls f(first, end) on `threads` contiguous slices of [0, n), the first on
// this thread (0 threads: std::thread::hardware_concurrency()). f must not
// depend on how [0, n) is cut for its result to be the same for any count.
template <class F>
void parallel_slices(std::size_t n, unsigned threads, F&& f) {
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    const std::size_t t = std::min<std::size_t>(threads, std::max<std::size_t>(n, 1));
    if (t <= 1) {
        f(std::size_t{0}, n);
        return;
    }
    std::vector<std::thread> pool;
    for (std::size_t k = 1; k < t; ++k) pool.emplace_back([&f, k, n, t] { f(k * n / t, (k + 1) * n / t); });
    f(std::size_t{0}, n / t);
    for (std::thread& th : pool) th.join();
}

}  // namespace svq::detail
