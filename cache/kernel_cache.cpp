#include "cache/kernel_cache.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <cstdlib>
#include <string_view>
#include <thread>

#include "cache/cache_dir.hpp"
#include "codegen/compiler.hpp"
#include "common/env.hpp"
#include "common/log.hpp"

namespace dilatron::cache {

CacheOptions CacheOptions::from_environment(const std::filesystem::path& dir_override) {
  CacheOptions o;
  o.dir = dir_override.empty() ? default_cache_dir() : dir_override;
  o.max_bytes = max_bytes_from_environment();
  o.jit = !env::parse_switch("DILATRON_DISABLE_JIT", env::text("DILATRON_DISABLE_JIT"));
  o.compile_jobs = std::max(1u, std::thread::hardware_concurrency());
  if (const std::string_view jobs = env::text("DILATRON_COMPILE_JOBS"); !jobs.empty()) {
    o.compile_jobs = unsigned(env::parse_count("DILATRON_COMPILE_JOBS", jobs, 1, 1024));
  }
  o.jit_options = codegen::jit_options();
  return o;
}

KernelCache::KernelCache(CacheOptions options)
    : options_(std::move(options)),
      disk_(options_.dir, options_.max_bytes),
      compile_slots_(std::max<std::ptrdiff_t>(1, options_.compile_jobs)) {}

KernelCache& KernelCache::global() {
  static KernelCache cache(CacheOptions::from_environment());
  return cache;
}

Lookup KernelCache::get(const codegen::KernelSpec& spec) {
  // Within one process every other key ingredient is fixed, so the canonical spec alone identifies a
  // kernel in memory; the full key is computed only on a miss.
  const std::string canonical = spec.canonical();
  std::promise<std::shared_ptr<const Entry>> promise;
  std::unique_lock lock(mutex_);
  if (auto it = entries_.find(canonical); it != entries_.end()) {
    const std::shared_future<std::shared_ptr<const Entry>> pending = it->second;
    lock.unlock();  // wait for another thread's fetch without blocking other kernels
    return {pending.get(), Source::memory, {}, {}};
  }
  entries_.emplace(canonical, promise.get_future().share());
  lock.unlock();
  try {
    const KeyMaterial material = key_material(spec, options_.jit_options);
    Lookup found = fetch(spec, cache_key(material), material);
    promise.set_value(found.entry);
    return found;
  } catch (...) {
    promise.set_exception(std::current_exception());
    lock.lock();
    entries_.erase(canonical);  // let a later call try again
    throw;
  }
}

Lookup KernelCache::fetch(const codegen::KernelSpec& spec, const std::string& key, const KeyMaterial& material) {
  DiskCache::Loaded loaded = disk_.load(key);
  if (loaded.entry) return {std::make_shared<const Entry>(std::move(*loaded.entry)), Source::disk, {}, {}};
  if (!loaded.problem.empty()) log::write(log::Level::warn, "replacing a bad cache entry: {}", loaded.problem);
  if (!options_.jit) {
    throw Error(fmt::format(
        "kernel {} is not in the cache at {} and DILATRON_DISABLE_JIT=1 forbids compiling it; pre-warm it on a machine "
        "with NVRTC (`dilatron cache warm --arch {} ...` with this configuration), then `dilatron cache export` there "
        "and `dilatron cache import` here [{}]",
        spec.label(), disk_.dir().string(), spec.arch, spec.canonical()));
  }
  // Other processes (the ranks of one job) may be missing this kernel too: one compiles it, the others
  // wait for the lock and then find it on disk.
  const DiskCache::KeyLock lock = disk_.lock(key);
  if (DiskCache::Loaded again = disk_.load(key); again.entry) {
    return {std::make_shared<const Entry>(std::move(*again.entry)), Source::disk, loaded.problem, {}};
  }
  compile_slots_.acquire();
  struct Release {
    std::counting_semaphore<>& slots;
    ~Release() { slots.release(); }
  } release{compile_slots_};
  log::write(log::Level::info, "compiling {}", spec.label());
  const codegen::CompiledKernel compiled = codegen::compile(spec, options_.jit_options);
  ++compiles_;
  auto entry = std::make_shared<const Entry>(make_entry(spec, material, compiled));
  // The kernel is good whether or not the disk keeps it (a full disk, a concurrent `cache clear`): the
  // run goes on with it from memory, and a later process compiles it again.
  std::vector<std::string> evicted;
  try {
    evicted = disk_.store(*entry);
  } catch (const Error& e) {
    log::write(log::Level::warn, "kernel {} is used from memory but not cached: {}", spec.label(), e.what());
  }
  return {std::move(entry), Source::compiled, loaded.problem, std::move(evicted)};
}

}  // namespace dilatron::cache
