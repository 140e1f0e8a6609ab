// The kernel cache as the runtime sees it: memory, then disk, then NVRTC. Thread-safe; N threads asking
// for one missing kernel compile it once (single flight), and at most `compile_jobs` compilations run
// at a time. Binaries only: loading them into a CUcontext is runtime/'s job.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <semaphore>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/disk_cache.hpp"
#include "codegen/jit_options.hpp"
#include "codegen/kernel_spec.hpp"

namespace dilatron::cache {

struct CacheOptions {
  std::filesystem::path dir;
  std::uint64_t max_bytes = 0;
  bool jit = true;            // false: a miss is an error (DILATRON_DISABLE_JIT=1)
  unsigned compile_jobs = 1;  // concurrent NVRTC compilations
  codegen::JitOptions jit_options;  // line info (in the key), dump, ptxas check

  // DILATRON_CACHE_DIR (or `dir_override`), DILATRON_CACHE_MAX_BYTES, DILATRON_DISABLE_JIT,
  // DILATRON_COMPILE_JOBS (default: hardware threads), DILATRON_JIT_* (codegen::jit_options()).
  static CacheOptions from_environment(const std::filesystem::path& dir_override = {});
};

enum class Source { memory, disk, compiled };

struct Lookup {
  std::shared_ptr<const Entry> entry;
  Source source;
  std::string repaired;              // set when a corrupt disk entry was found and replaced
  std::vector<std::string> evicted;  // keys the size cap evicted to make room for this entry
};

class KernelCache {
 public:
  explicit KernelCache(CacheOptions options);

  Lookup get(const codegen::KernelSpec& spec);

  DiskCache& disk() noexcept { return disk_; }
  const CacheOptions& options() const noexcept { return options_; }
  std::uint64_t compiles() const noexcept { return compiles_; }

  // The process-wide cache, created from the environment on first use.
  static KernelCache& global();

 private:
  Lookup fetch(const codegen::KernelSpec& spec, const std::string& key, const KeyMaterial& material);

  CacheOptions options_;
  DiskCache disk_;
  std::counting_semaphore<> compile_slots_;
  std::atomic<std::uint64_t> compiles_{0};
  std::mutex mutex_;
  std::unordered_map<std::string, std::shared_future<std::shared_ptr<const Entry>>> entries_;  // by canonical spec
};

}  // namespace dilatron::cache
