// The memory layer over disk and NVRTC: memory, disk and compile paths, single flight, repair of bad
// entries, and DILATRON_DISABLE_JIT.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <fstream>
#include <thread>

#include "cache/kernel_cache.hpp"
#include "tests/support/temp_dir.hpp"

using namespace dilatron;
using namespace dilatron::cache;

namespace {

CacheOptions options(const std::filesystem::path& dir, bool jit = true) {
  CacheOptions o;
  o.dir = dir;
  o.max_bytes = 1 << 30;
  o.jit = jit;
  o.compile_jobs = 2;
  return o;
}

codegen::KernelSpec merge_spec(int head_dim) {
  codegen::KernelSpec s;
  s.dtype = DType::f16;
  s.head_dim = head_dim;
  s.arch = "sm_80";
  return s;
}

}  // namespace

TEST(KernelCache, CompilesOnceThenHitsMemoryThenDisk) {
  test::TempDir tmp;
  const codegen::KernelSpec spec = merge_spec(64);
  {
    KernelCache cache(options(tmp.path()));
    const Lookup first = cache.get(spec);
    EXPECT_EQ(first.source, Source::compiled);
    EXPECT_FALSE(first.entry->cubin.empty());
    const Lookup second = cache.get(spec);
    EXPECT_EQ(second.source, Source::memory);
    EXPECT_EQ(second.entry, first.entry) << "the same object, not a copy";
    EXPECT_EQ(cache.compiles(), 1u);
  }
  KernelCache fresh(options(tmp.path()));  // a new process, in effect
  const Lookup from_disk = fresh.get(spec);
  EXPECT_EQ(from_disk.source, Source::disk);
  EXPECT_EQ(fresh.compiles(), 0u);
}

TEST(KernelCache, ManyThreadsAskingForOneMissingKernelCompileItOnce) {
  test::TempDir tmp;
  KernelCache cache(options(tmp.path()));
  const codegen::KernelSpec spec = merge_spec(128);
  std::vector<std::shared_ptr<const Entry>> got(8);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < got.size(); ++i) threads.emplace_back([&, i] { got[i] = cache.get(spec).entry; });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(cache.compiles(), 1u);
  for (const auto& entry : got) EXPECT_EQ(entry, got[0]);
  EXPECT_EQ(cache.disk().scan().size(), 1u);
}

TEST(KernelCache, ABadEntryIsReplaced) {
  test::TempDir tmp;
  const codegen::KernelSpec spec = merge_spec(64);
  std::string key;
  {
    KernelCache cache(options(tmp.path()));
    key = cache.get(spec).entry->key();
  }
  std::filesystem::resize_file(tmp / (key + ".kernel"), 100);  // truncated
  KernelCache cache(options(tmp.path()));
  const Lookup repaired = cache.get(spec);
  EXPECT_EQ(repaired.source, Source::compiled);
  EXPECT_NE(repaired.repaired.find("truncated"), std::string::npos) << repaired.repaired;
  EXPECT_TRUE(cache.disk().load(key).entry);
}

TEST(KernelCache, DisabledJitTurnsAMissIntoAnErrorNamingTheKernel) {
  test::TempDir tmp;
  const codegen::KernelSpec spec = merge_spec(64);
  KernelCache frozen(options(tmp.path(), false));
  try {
    frozen.get(spec);
    ADD_FAILURE() << "compiled with JIT disabled";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("DILATRON_DISABLE_JIT=1"), std::string::npos) << what;
    EXPECT_NE(what.find(spec.label()), std::string::npos) << what;
    EXPECT_NE(what.find("dilatron cache warm --arch sm_80"), std::string::npos) << what;
  }
  EXPECT_EQ(frozen.compiles(), 0u);
  KernelCache(options(tmp.path())).get(spec);  // warm it
  EXPECT_EQ(frozen.get(spec).source, Source::disk) << "a failed lookup is retried, and now hits";
}

// A store that fails after the compile (here the entry's name is taken by a directory, as a concurrent
// `cache clear` or a full disk would make it fail) costs the cache, not the caller's run.
TEST(KernelCache, AFailedStoreServesTheCompiledKernelFromMemory) {
  test::TempDir tmp;
  const codegen::KernelSpec spec = merge_spec(64);
  KernelCache cache(options(tmp.path()));
  {
    KernelCache probe(options(tmp / "probe"));
    const Lookup compiled = probe.get(spec);
    std::filesystem::create_directory(tmp.path() / (compiled.entry->key() + ".kernel"));
  }
  const Lookup got = cache.get(spec);
  EXPECT_EQ(got.source, Source::compiled);
  EXPECT_FALSE(got.entry->cubin.empty());
  EXPECT_EQ(cache.get(spec).source, Source::memory);
}

TEST(KernelCache, OptionsFromTheEnvironment) {
  test::TempDir tmp;
  ::setenv("DILATRON_DISABLE_JIT", "1", 1);
  ::setenv("DILATRON_COMPILE_JOBS", "3", 1);
  CacheOptions o = CacheOptions::from_environment(tmp.path());
  EXPECT_FALSE(o.jit);
  EXPECT_EQ(o.compile_jobs, 3u);
  EXPECT_EQ(o.dir, tmp.path());
  for (const char* bad : {"zero", "2abc", "0", "-3", "99999999999999999999", "1025"}) {
    SCOPED_TRACE(bad);
    ::setenv("DILATRON_COMPILE_JOBS", bad, 1);
    EXPECT_THROW(CacheOptions::from_environment(tmp.path()), Error);
  }
  ::unsetenv("DILATRON_COMPILE_JOBS");
  for (const char* bad : {"yes", "true", "2", " 1"}) {
    SCOPED_TRACE(bad);
    ::setenv("DILATRON_DISABLE_JIT", bad, 1);
    EXPECT_THROW(CacheOptions::from_environment(tmp.path()), Error);
  }
  ::setenv("DILATRON_DISABLE_JIT", "0", 1);
  EXPECT_TRUE(CacheOptions::from_environment(tmp.path()).jit);
  ::unsetenv("DILATRON_DISABLE_JIT");
  ::unsetenv("DILATRON_COMPILE_JOBS");
  EXPECT_TRUE(CacheOptions::from_environment(tmp.path()).jit);
}

TEST(KernelCache, LineInfoBuildsLiveBesideThePlainOnesAndADumpReusesThem) {
  test::TempDir tmp;
  const codegen::KernelSpec spec = merge_spec(64);
  KernelCache plain(options(tmp / "cache"));
  CacheOptions lines_options = options(tmp / "cache");
  lines_options.jit_options.lineinfo = true;
  KernelCache lines(lines_options);
  const Lookup a = plain.get(spec), b = lines.get(spec);
  EXPECT_EQ(a.source, Source::compiled);
  EXPECT_EQ(b.source, Source::compiled) << "a plain binary must not stand in for a line-info one";
  EXPECT_NE(a.entry->key(), b.entry->key());
  const std::string options_b = b.entry->meta.material.options;
  EXPECT_NE(options_b.find("-lineinfo"), std::string::npos) << options_b;
  EXPECT_EQ(plain.disk().scan().size(), 2u);

  CacheOptions dump_options = options(tmp / "cache");
  dump_options.jit_options.dump_dir = tmp / "dump";
  dump_options.jit_options.ptxas_check = true;
  KernelCache dumping(dump_options);
  const Lookup c = dumping.get(spec);
  EXPECT_EQ(c.source, Source::disk) << "dump and ptxas check do not change the key";
  EXPECT_EQ(c.entry->key(), a.entry->key());
  EXPECT_FALSE(std::filesystem::exists(tmp / "dump")) << "only a compile dumps";
  const Lookup d = dumping.get(merge_spec(128));
  EXPECT_EQ(d.source, Source::compiled);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(tmp / "dump"), {}), 5) << "a compile dumps 5 files";
}
