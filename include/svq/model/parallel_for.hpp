// Independent tasks of uneven cost over threads, one index at a time.
//
// core/parallel.hpp's parallel_slices cuts [0, n) into contiguous slices,
// which suits rows of one matrix on equal cores. The model-level methods run
// tasks whose costs differ by orders of magnitude (a configuration search on
// a 64 x 64 matrix beside one on a 512 x 64 embedding), so a thread takes
// the next index when it is free. Each task writes only its own output, so
// results never depend on the thread count.
#pragma once

#include <svq/core/parallel.hpp>

#include <cstddef>

namespace svq::detail {

// Calls f(i) for i in [0, count) on up to `threads` threads (0: hardware
// concurrency), the first on this thread: parallel_chunks with chunks of one
// index. After the first exception no new index starts; it is rethrown once
// every thread has stopped.
template <class F>
void parallel_for(std::size_t count, unsigned threads, F&& f) {
    parallel_chunks(count, threads, 1, [&](std::size_t first, std::size_t end) {
        for (std::size_t i = first; i < end; ++i) f(i);
    });
}

}  // namespace svq::detail
