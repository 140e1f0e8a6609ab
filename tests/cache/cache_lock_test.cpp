// Writers of one key across processes: the per-key lock file excludes, never shows up as an entry, is
// gone once released, and lets several caches (processes, in effect) that miss one kernel compile it
// once between them.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "cache/disk_cache.hpp"
#include "cache/kernel_cache.hpp"
#include "tests/support/temp_dir.hpp"

using namespace dilatron;
using namespace dilatron::cache;
using std::chrono::milliseconds;

namespace {

const std::string kKey = "0123456789abcdef0123456789abcdef";

CacheOptions options(const std::filesystem::path& dir) {
  CacheOptions o;
  o.dir = dir;
  o.max_bytes = 1 << 30;
  o.compile_jobs = 1;
  return o;
}

}  // namespace

TEST(CacheLock, ExcludesOtherHoldersUntilReleasedAndLeavesNoFile) {
  test::TempDir tmp;
  DiskCache one(tmp.path()), other(tmp.path());
  std::atomic<bool> released{false}, second_held_early{false};
  std::thread waiter;
  {
    const DiskCache::KeyLock first = one.lock(kKey);
    ASSERT_TRUE(first.held());
    EXPECT_TRUE(std::filesystem::exists(tmp / (kKey + ".lock")));
    waiter = std::thread([&] {
      const DiskCache::KeyLock second = other.lock(kKey);
      if (!released) second_held_early = true;
      EXPECT_TRUE(second.held());
    });
    std::this_thread::sleep_for(milliseconds(200));
    released = true;
  }
  waiter.join();
  EXPECT_FALSE(second_held_early);
  EXPECT_FALSE(std::filesystem::exists(tmp / (kKey + ".lock"))) << "released locks remove their file";
  const DiskCache::KeyLock another_key = one.lock("ffff" + kKey.substr(4));
  EXPECT_TRUE(one.lock(kKey).held()) << "keys lock independently";
}

TEST(CacheLock, LockFilesAreNoEntriesAndClearRemovesOnlyStaleOnes) {
  test::TempDir tmp;
  DiskCache disk(tmp.path());
  std::ofstream(tmp / ("feedfeedfeedfeedfeedfeedfeedfeed.lock")).put('\0');  // a killed process's leftover
  const DiskCache::KeyLock held = disk.lock(kKey);
  EXPECT_TRUE(disk.scan().empty());
  EXPECT_EQ(disk.clear(), 0u) << "no entries were removed";
  EXPECT_FALSE(std::filesystem::exists(tmp / "feedfeedfeedfeedfeedfeedfeedfeed.lock"));
  EXPECT_TRUE(std::filesystem::exists(tmp / (kKey + ".lock"))) << "a held lock stays";
}

TEST(CacheLock, AHolderThatNeverLetsGoIsWaitedForOnlySoLong) {
  test::TempDir tmp;
  DiskCache disk(tmp.path());
  const int fd = open((tmp / (kKey + ".lock")).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(flock(fd, LOCK_EX), 0);
  const auto start = std::chrono::steady_clock::now();
  const DiskCache::KeyLock lock = disk.lock(kKey, milliseconds(200));
  EXPECT_FALSE(lock.held());
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(2'000));
  close(fd);
}

TEST(CacheLock, CachesMissingOneKernelCompileItOnceBetweenThem) {
  test::TempDir tmp;
  codegen::KernelSpec spec;
  spec.dtype = DType::f16;
  spec.head_dim = 64;
  spec.arch = "sm_80";
  constexpr int kCaches = 4;
  std::vector<std::unique_ptr<KernelCache>> caches;
  for (int i = 0; i < kCaches; ++i) caches.push_back(std::make_unique<KernelCache>(options(tmp.path())));
  std::vector<Source> sources(kCaches);
  std::vector<std::string> keys(kCaches);
  std::atomic<int> arrived{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kCaches; ++i) {
    threads.emplace_back([&, i] {
      ++arrived;
      while (arrived < kCaches) std::this_thread::yield();  // all miss the disk together
      const Lookup found = caches[std::size_t(i)]->get(spec);
      sources[std::size_t(i)] = found.source;
      keys[std::size_t(i)] = found.entry->key();
    });
  }
  for (std::thread& t : threads) t.join();
  std::uint64_t compiles = 0;
  for (const auto& cache : caches) compiles += cache->compiles();
  EXPECT_EQ(compiles, 1u);
  EXPECT_EQ(std::count(sources.begin(), sources.end(), Source::compiled), 1);
  EXPECT_EQ(std::count(sources.begin(), sources.end(), Source::disk), kCaches - 1);
  for (const std::string& key : keys) EXPECT_EQ(key, keys[0]);
  EXPECT_EQ(caches[0]->disk().scan().size(), 1u);
  for (const auto& item : std::filesystem::directory_iterator(tmp.path())) {
    EXPECT_EQ(item.path().extension(), ".kernel") << "left behind: " << item.path();
  }
}
