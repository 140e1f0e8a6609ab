// A fixed pool of threads pulling indices from a shared counter: the host reference and `cache warm`
// both spread independent work this way.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace dilatron {

// Calls make_worker() once per thread (per-thread scratch state lives in what it returns), then that
// worker with each index in [0, count) it pulls. The calling thread is one of the `threads` (0: every
// hardware thread). The first exception stops the handing out of indices and is rethrown after all
// threads have finished.
template <class MakeWorker>
void parallel_for(std::int64_t count, unsigned threads, MakeWorker&& make_worker) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = unsigned(std::clamp<std::int64_t>(count, 1, threads));
  std::atomic<std::int64_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto run = [&] {
    try {
      auto work = make_worker();
      for (std::int64_t i = next++; i < count; i = next++) work(i);
    } catch (...) {
      std::lock_guard lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      next = count;
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(run);
  run();
  for (std::thread& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace dilatron
