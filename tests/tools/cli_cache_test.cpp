// `dilatron cache ...` and `dilatron gen` as operators use them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include <fstream>
#include <algorithm>
#include <map>
#include <set>
#include <thread>

#include "autotune/required_kernels.hpp"
#include "codegen/compiler.hpp"
#include "runtime/tuning_file.hpp"
#include "runtime/driver.hpp"
#include "tests/support/cli.hpp"

using namespace dilatron::test;

namespace {

const std::string kConfig = "--arch sm_80 --segments 64,128 --dilations 1,2 --head-dim 64 --dtype f16";
constexpr std::size_t kKernels = 3;  // w64 r1 into the accumulator, w128 r2 merged into it, finish_output

std::string in(const TempDir& tmp, const char* name = "cache") { return " --cache-dir '" + (tmp / name).string() + "'"; }

std::map<std::string, std::pair<ino_t, std::string>> snapshot(const std::filesystem::path& dir) {
  std::map<std::string, std::pair<ino_t, std::string>> files;
  for (const auto& item : std::filesystem::directory_iterator(dir)) {
    struct stat st {};
    stat(item.path().c_str(), &st);
    files[item.path().filename().string()] = {st.st_ino, slurp(item.path())};
  }
  return files;
}

}  // namespace

TEST(CliCache, WarmTwiceIsAllHitsAndWritesNothing) {
  TempDir tmp;
  const CliResult cold = run_cli(tmp, "cache warm " + kConfig + in(tmp));
  ASSERT_EQ(cold.status, 0) << cold.err;
  EXPECT_NE(cold.out.find("3 kernels for sm_80"), std::string::npos) << cold.out;
  EXPECT_NE(cold.out.find("3 compiled, 0 hits, 0 failed"), std::string::npos) << cold.out;
  EXPECT_NE(cold.err.find("[3/3]"), std::string::npos) << "progress lines: " << cold.err;
  struct stat st {};
  ASSERT_EQ(stat((tmp / "cache").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  const auto before = snapshot(tmp / "cache");
  EXPECT_EQ(before.size(), kKernels);

  const CliResult warm = run_cli(tmp, "cache warm " + kConfig + in(tmp));
  ASSERT_EQ(warm.status, 0) << warm.err;
  EXPECT_NE(warm.out.find("0 compiled, 3 hits, 0 failed"), std::string::npos) << warm.out;
  EXPECT_EQ(snapshot(tmp / "cache"), before) << "a warm cache is read, never rewritten";
}

TEST(CliCache, VerifyCatchesCorruptionAndTheNextWarmRepairsIt) {
  TempDir tmp;
  ASSERT_EQ(run_cli(tmp, "cache warm " + kConfig + in(tmp)).status, 0);
  EXPECT_EQ(run_cli(tmp, "cache verify" + in(tmp)).status, 0);
  const auto victim = std::filesystem::directory_iterator(tmp / "cache")->path();
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x5a');
  }
  const CliResult bad = run_cli(tmp, "cache verify" + in(tmp));
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find(victim.filename().string()), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("checksum"), std::string::npos) << bad.err;
  const CliResult repair = run_cli(tmp, "cache warm " + kConfig + in(tmp));
  ASSERT_EQ(repair.status, 0) << repair.err;
  EXPECT_NE(repair.out.find("1 compiled, 2 hits"), std::string::npos) << repair.out;
  EXPECT_NE(repair.out.find("1 bad entries replaced"), std::string::npos) << repair.out;
  EXPECT_EQ(run_cli(tmp, "cache verify" + in(tmp)).status, 0);
}

TEST(CliCache, FourConcurrentWarmsOfOneEmptyDirectoryAllSucceed) {
  TempDir tmp;
  std::vector<CliResult> results(4, CliResult{-1, {}, {}});
  std::vector<std::unique_ptr<TempDir>> logs;
  for (int i = 0; i < 4; ++i) logs.push_back(std::make_unique<TempDir>());
  std::vector<std::thread> processes;
  for (int i = 0; i < 4; ++i) {
    processes.emplace_back([&, i] { results[i] = run_cli(*logs[i], "cache warm --jobs 1 " + kConfig + in(tmp)); });
  }
  for (std::thread& p : processes) p.join();
  for (const CliResult& r : results) EXPECT_EQ(r.status, 0) << r.err;
  const CliResult verify = run_cli(tmp, "cache verify" + in(tmp));
  EXPECT_EQ(verify.status, 0) << verify.err;
  EXPECT_NE(verify.out.find("3 entries"), std::string::npos) << verify.out;
  for (const auto& item : std::filesystem::directory_iterator(tmp / "cache")) {
    EXPECT_FALSE(item.path().filename().string().starts_with(".")) << "temp file left: " << item.path();
  }
}

TEST(CliCache, LsJsonCarriesTheReport) {
  TempDir tmp;
  ASSERT_EQ(run_cli(tmp, "cache warm " + kConfig + in(tmp)).status, 0);
  const CliResult ls = run_cli(tmp, "cache ls --json" + in(tmp));
  ASSERT_EQ(ls.status, 0) << ls.err;
  const nlohmann::json entries = nlohmann::json::parse(ls.out);
  ASSERT_EQ(entries.size(), kKernels);
  for (const auto& e : entries) {
    for (const char* field : {"key", "kernel", "arch", "registers", "spill_bytes", "shared_bytes", "compile_ms"}) {
      EXPECT_TRUE(e.contains(field)) << field << " in " << e.dump();
    }
    EXPECT_EQ(e["arch"], "sm_80");
    EXPECT_GT(e["registers"].get<int>(), 0);
    EXPECT_EQ(e["spill_bytes"], 0);
    EXPECT_TRUE(e["usable"].get<bool>());
  }
  const CliResult table = run_cli(tmp, "cache ls" + in(tmp));
  EXPECT_NE(table.out.find("attention_partial f16 d64 w64 r1 tile 128x64 4w 3s sm_80"), std::string::npos) << table.out;
  const CliResult stats = run_cli(tmp, "cache stats" + in(tmp));
  EXPECT_NE(stats.out.find("entries     3 (0 bad"), std::string::npos) << stats.out;
  const CliResult clear = run_cli(tmp, "cache clear" + in(tmp));
  EXPECT_NE(clear.out.find("removed 3 entries"), std::string::npos) << clear.out;
  EXPECT_TRUE(std::filesystem::is_empty(tmp / "cache"));
}

TEST(CliCache, ExportImportShipsAVerifiedCache) {
  TempDir tmp;
  ASSERT_EQ(run_cli(tmp, "cache warm " + kConfig + in(tmp)).status, 0);
  const std::string bundle = (tmp / "kernels.bundle").string();
  const CliResult exported = run_cli(tmp, "cache export '" + bundle + "'" + in(tmp));
  ASSERT_EQ(exported.status, 0) << exported.err;
  EXPECT_NE(exported.out.find("exported 3 entries"), std::string::npos);
  const CliResult imported = run_cli(tmp, "cache import '" + bundle + "'" + in(tmp, "elsewhere"));
  ASSERT_EQ(imported.status, 0) << imported.err;
  EXPECT_EQ(snapshot(tmp / "elsewhere").size(), kKernels);
  // The imported cache serves a machine that may not compile.
  const CliResult frozen = run_cli(tmp, "cache warm " + kConfig + in(tmp, "elsewhere"), "DILATRON_DISABLE_JIT=1");
  EXPECT_EQ(frozen.status, 0) << frozen.err;
  EXPECT_NE(frozen.out.find("3 hits"), std::string::npos);

  std::string bytes = slurp(bundle);
  bytes[bytes.size() / 2] ^= 0x40;
  std::ofstream(tmp / "tampered.bundle", std::ios::binary) << bytes;
  const CliResult refused = run_cli(tmp, "cache import '" + (tmp / "tampered.bundle").string() + "'" + in(tmp, "third"));
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.err.find("nothing imported"), std::string::npos) << refused.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "third")) << "a bad bundle creates nothing";
}

// A fleet warmed from one tuned machine: warm builds the tuned winner, export ships it with its record
// (and no record whose winner stays behind), import installs both.
TEST(CliCache, AutotuneRecordsTravelWithTheKernelsTheyChoose) {
  TempDir tmp;
  dilatron::autotune::Workload w;  // kConfig
  w.config.segments = {64, 128};
  w.config.dilations = {1, 2};
  w.head_dim = 64;
  w.dtype = dilatron::DType::f16;
  w.arch = "sm_80";
  const dilatron::codegen::KernelSpec merge = dilatron::autotune::forward_kernels(w)[1];
  const dilatron::autotune::TuningTarget gpu{"NVIDIA A100-SXM4-80GB", 13000};
  const auto record = [&](std::int64_t seq_len, dilatron::codegen::Tiles winner) {
    return dilatron::autotune::TuningRecord{dilatron::autotune::tuning_key(merge, gpu, seq_len),
                                            {{winner, 42.0, ""}, {merge.tiles, 50.0, ""}}, winner, "2026-11-23T00:00:00Z"};
  };
  dilatron::store_tuning(tmp / "cache", {record(4096, {64, 64, 4, 2})});
  const CliResult warm = run_cli(tmp, "cache warm " + kConfig + in(tmp));
  ASSERT_EQ(warm.status, 0) << warm.err;
  EXPECT_NE(warm.out.find("4 kernels for sm_80"), std::string::npos) << "the tuned winner beside the default: " << warm.out;
  // A record whose winner was never built here stays behind.
  dilatron::store_tuning(tmp / "cache", {record(1 << 20, {128, 32, 4, 2})});

  const std::string bundle = (tmp / "tuned.bundle").string();
  const CliResult exported = run_cli(tmp, "cache export '" + bundle + "'" + in(tmp));
  ASSERT_EQ(exported.status, 0) << exported.err;
  EXPECT_NE(exported.out.find("exported 4 entries and 1 tuning records"), std::string::npos) << exported.out;
  const CliResult imported = run_cli(tmp, "cache import '" + bundle + "'" + in(tmp, "fleet"));
  ASSERT_EQ(imported.status, 0) << imported.err;
  EXPECT_NE(imported.out.find("imported 4 entries and 1 tuning records"), std::string::npos) << imported.out;
  const auto fleet = dilatron::read_tuning(tmp / "fleet");
  ASSERT_EQ(fleet.records().size(), 1u);
  EXPECT_EQ(fleet.records()[0].key, record(4096, {}).key);
  EXPECT_EQ(fleet.records()[0].winner, (dilatron::codegen::Tiles{64, 64, 4, 2}));
  const CliResult info = run_cli(tmp, "info --json", "DILATRON_CACHE_DIR='" + (tmp / "fleet").string() + "'");
  EXPECT_EQ(nlohmann::json::parse(info.out)["tuning"]["records"], 1) << info.out;
  // A target whose own database is damaged takes nothing, not even the kernels.
  std::filesystem::create_directory(tmp / "damaged");
  std::filesystem::permissions(tmp / "damaged", std::filesystem::perms::owner_all);
  std::ofstream(tmp / "damaged" / "tuning.json") << "{ not json";
  const CliResult blocked = run_cli(tmp, "cache import '" + bundle + "'" + in(tmp, "damaged"));
  EXPECT_EQ(blocked.status, 1);
  EXPECT_NE(blocked.err.find("nothing imported"), std::string::npos) << blocked.err;
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(tmp / "damaged"), {}), 1) << "only tuning.json";
  // Under a cap too small for them, the summary counts what stayed.
  const CliResult tiny = run_cli(tmp, "cache import '" + bundle + "'" + in(tmp, "tiny"), "DILATRON_CACHE_MAX_BYTES=1");
  ASSERT_EQ(tiny.status, 0) << tiny.err;
  EXPECT_NE(tiny.out.find("imported 1 entries and 1 tuning records"), std::string::npos) << tiny.out;
  EXPECT_NE(tiny.out.find("3 more evicted again by the size cap"), std::string::npos) << tiny.out;

  const CliResult frozen = run_cli(tmp, "cache warm " + kConfig + in(tmp, "fleet"), "DILATRON_DISABLE_JIT=1");
  EXPECT_EQ(frozen.status, 0) << frozen.err;
  EXPECT_NE(frozen.out.find("4 hits"), std::string::npos) << "the fleet needs no compiler: " << frozen.out;

  // A tuning section that does not parse: nothing is installed, kernels included.
  std::string bytes = slurp(bundle);
  const auto at = bytes.rfind("\"format\"");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 1] = 'F';
  std::ofstream(tmp / "bad-tuning.bundle", std::ios::binary) << bytes;
  const CliResult refused = run_cli(tmp, "cache import '" + (tmp / "bad-tuning.bundle").string() + "'" + in(tmp, "third"));
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.err.find("tuning section: checksum mismatch"), std::string::npos) << refused.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "third"));
}

TEST(CliCache, WarmWithBackwardAddsTheGradientKernels) {
  TempDir tmp;
  const std::string config = " --arch sm_80 --segments 64 --dilations 1 --head-dim 64 --dtype f16";
  const CliResult warm = run_cli(tmp, "cache warm --backward" + config + in(tmp));
  ASSERT_EQ(warm.status, 0) << warm.err;
  EXPECT_NE(warm.out.find("4 kernels for sm_80"), std::string::npos) << "forward, prepare, backward, finish: " << warm.out;
  const CliResult listed = run_cli(tmp, "cache ls" + in(tmp));
  for (const char* kernel : {"gradient_prepare f16 d64 4w sm_80", "attention_backward f16 d64 w64 r1 tile 64x64 4w 2s sm_80"}) {
    EXPECT_NE(listed.out.find(kernel), std::string::npos) << listed.out;
  }
  const CliResult wide = run_cli(tmp, "cache warm --backward --arch sm_90a --segments 64 --dilations 1 --head-dim 256" + in(tmp));
  EXPECT_EQ(wide.status, 2);
  EXPECT_NE(wide.err.find("the backward kernel supports 64, 96 and 128"), std::string::npos) << wide.err;
}

TEST(CliCache, WarmErrorsAreClear) {
  TempDir tmp;
  const CliResult frozen = run_cli(tmp, "cache warm " + kConfig + in(tmp), "DILATRON_DISABLE_JIT=1");
  EXPECT_NE(frozen.status, 0);
  EXPECT_NE(frozen.err.find("3 of 3 kernels failed"), std::string::npos) << frozen.err;
  EXPECT_NE(run_cli(tmp, "cache warm --arch sm_90 --segments 64,0 --dilations 1,1" + in(tmp)).err.find("segments[1] = 0"),
            std::string::npos);
  EXPECT_NE(run_cli(tmp, "cache warm --arch hopper --segments 64 --dilations 1" + in(tmp)).err.find("'hopper'"),
            std::string::npos);
  if (dilatron::driver::probe().devices.empty()) {
    const CliResult no_arch = run_cli(tmp, "cache warm --segments 64 --dilations 1" + in(tmp));
    EXPECT_NE(no_arch.status, 0);
    EXPECT_NE(no_arch.err.find("--arch is required"), std::string::npos) << no_arch.err;
  }
  std::filesystem::create_directory(tmp / "open");
  std::filesystem::permissions(tmp / "open", std::filesystem::perms::all);
  const CliResult unsafe = run_cli(tmp, "cache ls" + in(tmp, "open"));
  EXPECT_NE(unsafe.status, 0);
  EXPECT_NE(unsafe.err.find("writable by group or others"), std::string::npos) << unsafe.err;
}

TEST(CliCache, WarmKernelsRebuildsTheListAnotherCacheHolds) {
  TempDir tmp;
  ASSERT_EQ(run_cli(tmp, "cache warm " + kConfig + in(tmp, "a")).status, 0);
  const CliResult listed = run_cli(tmp, "cache ls --specs" + in(tmp, "a"));
  ASSERT_EQ(listed.status, 0) << listed.err;
  EXPECT_EQ(std::count(listed.out.begin(), listed.out.end(), '\n'), std::ptrdiff_t(kKernels)) << listed.out;
  std::ofstream(tmp / "kernels.txt") << "# taken from cache a\n\n" << listed.out << listed.out;  // repeats count once

  const CliResult same = run_cli(tmp, "cache warm --kernels '" + (tmp / "kernels.txt").string() + "'" + in(tmp, "b"));
  ASSERT_EQ(same.status, 0) << same.err;
  EXPECT_NE(same.out.find("3 kernels for sm_80"), std::string::npos) << same.out;
  std::set<std::string> a, b;
  for (const auto& item : std::filesystem::directory_iterator(tmp / "a")) a.insert(item.path().filename().string());
  for (const auto& item : std::filesystem::directory_iterator(tmp / "b")) b.insert(item.path().filename().string());
  EXPECT_EQ(a, b) << "the same kernels under the same keys";

  const CliResult other = run_cli(tmp, "cache warm --arch sm_90a --kernels -" + in(tmp, "c") + " <'" +
                                            (tmp / "kernels.txt").string() + "'");
  ASSERT_EQ(other.status, 0) << other.err;
  EXPECT_NE(other.out.find("3 kernels for sm_90a"), std::string::npos) << other.out;
  const std::string retargeted = run_cli(tmp, "cache ls --specs" + in(tmp, "c")).out;
  EXPECT_EQ(retargeted.find("arch=sm_80"), std::string::npos) << retargeted;
  std::string expected = listed.out;
  for (std::size_t at; (at = expected.find("arch=sm_80")) != std::string::npos;) expected.replace(at, 10, "arch=sm_90a");
  EXPECT_EQ(retargeted, expected);
}

TEST(CliCache, WarmKernelsRefusesABadListBeforeCompilingAnything) {
  TempDir tmp;
  ASSERT_EQ(run_cli(tmp, "cache warm " + kConfig + in(tmp, "a")).status, 0);
  const std::string good = run_cli(tmp, "cache ls --specs" + in(tmp, "a")).out;
  std::ofstream(tmp / "typo.txt") << good << "v1 op=attention_forwrd dtype=f16\n";
  const CliResult typo = run_cli(tmp, "cache warm --kernels '" + (tmp / "typo.txt").string() + "'" + in(tmp, "b"));
  EXPECT_EQ(typo.status, 1);
  EXPECT_NE(typo.err.find("typo.txt:4: kernel spec 'v1 op=attention_forwrd dtype=f16': unknown op"), std::string::npos)
      << typo.err;
  std::ofstream(tmp / "old.txt") << good;
  const CliResult old = run_cli(tmp, "cache warm --arch sm_75 --kernels '" + (tmp / "old.txt").string() + "'" + in(tmp, "b"));
  EXPECT_EQ(old.status, 1);
  EXPECT_NE(old.err.find("old.txt:1: invalid kernel spec"), std::string::npos) << old.err;
  EXPECT_NE(old.err.find("older than sm_80"), std::string::npos) << old.err;
  const CliResult endless = run_cli(tmp, "cache warm --kernels /dev/zero" + in(tmp, "b"));
  EXPECT_EQ(endless.status, 1);
  EXPECT_NE(endless.err.find("/dev/zero:1: a line of over 4096 characters"), std::string::npos) << endless.err;
  const CliResult empty = run_cli(tmp, "cache warm --kernels /dev/null" + in(tmp, "b"));
  EXPECT_EQ(empty.status, 1);
  EXPECT_NE(empty.err.find("names no kernel"), std::string::npos) << empty.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "b")) << "a refused list creates no cache";
  const CliResult both = run_cli(tmp, "cache warm --kernels /dev/null --segments 64 --dilations 1" + in(tmp, "b"));
  EXPECT_EQ(both.status, 2);
  EXPECT_NE(both.err.find("excludes --kernels"), std::string::npos) << both.err;
}

TEST(CliCache, ConfigFileAndGen) {
  TempDir tmp;
  std::ofstream(tmp / "configs.json") << R"([{"segments": [64, 128], "dilations": [1, 2], "head_dim": 64, "dtype": "f16"},
                                             {"segments": [256], "dilations": [4], "head_dim": 64, "dtype": "f16",
                                              "mode": "head_groups"}])";
  const CliResult warm =
      run_cli(tmp, "cache warm --arch sm_80 --config '" + (tmp / "configs.json").string() + "'" + in(tmp));
  ASSERT_EQ(warm.status, 0) << warm.err;
  EXPECT_NE(warm.out.find("5 kernels"), std::string::npos) << warm.out;  // 3, plus clear and the w256 group launch
  std::ofstream(tmp / "broken.json") << R"([{"segments": [64]}])";
  const CliResult broken = run_cli(tmp, "cache warm --arch sm_80 --config '" + (tmp / "broken.json").string() + "'" + in(tmp));
  EXPECT_NE(broken.status, 0);
  EXPECT_NE(broken.err.find("broken.json [0]"), std::string::npos) << broken.err;

  std::ofstream(tmp / "typo.json") << R"({"segments": [64], "dilations": [1], "casual": true})";
  const CliResult typo = run_cli(tmp, "cache warm --arch sm_80 --config '" + (tmp / "typo.json").string() + "'" + in(tmp, "typo"));
  EXPECT_EQ(typo.status, 1);
  EXPECT_NE(typo.err.find("unknown key \"casual\""), std::string::npos) << typo.err;
  EXPECT_NE(typo.err.find("accepted: segments, dilations, head_dim, dtype, causal, mode"), std::string::npos) << typo.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "typo")) << "nothing is created for a refused config";
}

TEST(CliGen, PrintsTheWholeSourceNvrtcCompiles) {
  TempDir tmp;
  const CliResult gen = run_cli(tmp, "gen --segments 2048 --dilations 6 --kernel attention");
  ASSERT_EQ(gen.status, 0) << gen.err;
  EXPECT_NE(gen.out.find("// ----- begin dilatron/attention.cuh -----"), std::string::npos) << gen.out;
  EXPECT_NE(gen.out.find("// ----- begin dilatron/ptx.cuh -----"), std::string::npos) << "nested includes inlined";
  EXPECT_EQ(gen.out.find("#include \"dilatron/"), std::string::npos) << "no template include is left";
  EXPECT_NE(gen.out.find("2048LL, 6LL"), std::string::npos);
  EXPECT_EQ(gen.out.find("clear_output"), std::string::npos) << "--kernel filters";
  EXPECT_NE(run_cli(tmp, "gen --segments 2048 --dilations 6").out.find("clear_output"), std::string::npos);

  // Every kernel of a configuration in one file: each template once, and the file compiles as it is.
  const CliResult all = run_cli(tmp, "gen --arch sm_80 --segments 64,128 --dilations 1,2 --head-dim 64 --dtype f16");
  ASSERT_EQ(all.status, 0) << all.err;
  EXPECT_EQ(all.out.find("#include \"dilatron/"), std::string::npos);
  const std::string begin_types = "// ----- begin dilatron/types.cuh -----";
  EXPECT_EQ(all.out.find(begin_types), all.out.rfind(begin_types)) << "each template once";
  const std::string instantiation = "template __global__ void ";
  const std::size_t at = all.out.find(instantiation);
  ASSERT_NE(at, std::string::npos);
  const std::size_t name_at = at + instantiation.size();
  const std::string name = all.out.substr(name_at, all.out.find('(', name_at) - name_at);
  EXPECT_GE(std::count(all.out.begin(), all.out.end(), '\n'), 100);
  EXPECT_NO_THROW(dilatron::codegen::compile_unit({all.out, name}, "sm_80", "the whole gen output", {}));

  const CliResult headers = run_cli(tmp, "gen --segments 2048 --dilations 6 --kernel attention --headers");
  ASSERT_EQ(headers.status, 0) << headers.err;
  EXPECT_NE(headers.out.find("#include \"dilatron/attention.cuh\""), std::string::npos) << headers.out;
  EXPECT_NE(headers.out.find("includes: dilatron/attention.cuh, dilatron/args.cuh"), std::string::npos) << headers.out;
  EXPECT_LT(headers.out.size(), gen.out.size() / 4);

  const CliResult none = run_cli(tmp, "gen --segments 2048 --dilations 6 --kernel nothing_like_this");
  EXPECT_EQ(none.status, 2);
  EXPECT_NE(none.err.find("matches none"), std::string::npos) << none.err;
  EXPECT_NE(none.err.find("clear_output bf16 d128 4w sm_90a"), std::string::npos) << "lists what exists: " << none.err;
}

TEST(CliCache, WarmWithRanksAddsTheRingKernels) {
  TempDir tmp;
  const CliResult ring = run_cli(tmp, "cache warm " + kConfig + " --ranks 4" + in(tmp));
  ASSERT_EQ(ring.status, 0) << ring.err;
  EXPECT_NE(ring.out.find("8 kernels for sm_80"), std::string::npos) << ring.out;
  // The ring's own, the rank's own rows on the tiled kernel (merging where one GPU writes), and a block
  // received per branch.
  for (const char* name : {"ring_pack f16 d64", "finish_output f16 d64", "clear_output f32 d64",
                           "attention_partial_merge f16 d64 w64 r1", "attention_block f16 d64 w64 r1",
                           "attention_block f16 d64 w128 r2"}) {
    EXPECT_NE(ring.err.find(name), std::string::npos) << name << " in " << ring.err;
  }
  EXPECT_EQ(run_cli(tmp, "cache warm " + kConfig + " --ranks 0" + in(tmp)).status, 2);
}

TEST(CliCache, ReadOnlySubcommandsCreateNothing) {
  TempDir tmp;
  for (const char* sub : {"ls", "ls --json", "stats", "stats --json", "verify", "clear"}) {
    const CliResult r = run_cli(tmp, std::string("cache ") + sub + in(tmp, "absent"));
    EXPECT_EQ(r.status, 0) << sub << ": " << r.err;
    EXPECT_FALSE(std::filesystem::exists(tmp / "absent")) << sub << " created the cache directory";
  }
  EXPECT_EQ(nlohmann::json::parse(run_cli(tmp, "cache ls --json" + in(tmp, "absent")).out), nlohmann::json::array());
  const nlohmann::json stats = nlohmann::json::parse(run_cli(tmp, "cache stats --json" + in(tmp, "absent")).out);
  EXPECT_EQ(stats["exists"], false);
  EXPECT_EQ(stats["entries"], 0);
  const CliResult exported = run_cli(tmp, "cache export '" + (tmp / "b").string() + "'" + in(tmp, "absent"));
  EXPECT_EQ(exported.status, 1);
  EXPECT_FALSE(std::filesystem::exists(tmp / "b"));
  for (const char* sub : {"ls", "stats", "warm --arch sm_80 --segments 64 --dilations 1"}) {
    const CliResult empty = run_cli(tmp, std::string("cache ") + sub + " --cache-dir ''");
    EXPECT_EQ(empty.status, 2) << sub;
    EXPECT_NE(empty.err.find("--cache-dir"), std::string::npos) << empty.err;
  }
}

TEST(CliCache, WarmSaysWhatTheSizeCapEvicted) {
  TempDir tmp;
  const CliResult warm = run_cli(tmp, "cache warm --jobs 1 " + kConfig + in(tmp), "DILATRON_CACHE_MAX_BYTES=1K");
  ASSERT_EQ(warm.status, 0) << warm.err;
  EXPECT_NE(warm.out.find("3 compiled"), std::string::npos) << warm.out;
  EXPECT_NE(warm.out.find("2 evicted by the size cap (2 of them this configuration's)"), std::string::npos) << warm.out;
  EXPECT_NE(warm.err.find("evicted again: attention_partial"), std::string::npos) << warm.err;
  EXPECT_NE(warm.err.find("raise DILATRON_CACHE_MAX_BYTES"), std::string::npos) << warm.err;
  EXPECT_EQ(snapshot(tmp / "cache").size(), 1u);
  const CliResult roomy = run_cli(tmp, "cache warm " + kConfig + in(tmp));
  EXPECT_EQ(roomy.err.find("warning"), std::string::npos) << roomy.err;
  EXPECT_EQ(roomy.out.find("evicted"), std::string::npos) << roomy.out;
}

TEST(CliCache, JitSwitchesComeFromTheEnvironment) {
  TempDir tmp;
  const std::string dump = (tmp / "dump").string();
  const std::string debug = "DILATRON_JIT_DUMP='" + dump + "' DILATRON_JIT_LINEINFO=1 DILATRON_JIT_PTXAS_CHECK=1";
  const CliResult warm = run_cli(tmp, "cache warm " + kConfig + in(tmp), debug);
  ASSERT_EQ(warm.status, 0) << "the LongNet kernels pass the ptxas check: " << warm.err;
  std::map<std::string, int> per_suffix;
  for (const auto& item : std::filesystem::directory_iterator(dump)) ++per_suffix[item.path().extension().string()];
  EXPECT_EQ(per_suffix, (std::map<std::string, int>{{".cu", 3}, {".log", 3}, {".ptx", 3}, {".ptxas", 3}, {".cubin", 3}}));

  const auto lines = nlohmann::json::parse(run_cli(tmp, "cache ls --json" + in(tmp), "DILATRON_JIT_LINEINFO=1").out);
  ASSERT_EQ(lines.size(), kKernels);
  for (const auto& e : lines) EXPECT_TRUE(e["usable"].get<bool>()) << e.dump();
  const auto plain = nlohmann::json::parse(run_cli(tmp, "cache ls --json" + in(tmp)).out);
  for (const auto& e : plain) EXPECT_FALSE(e["usable"].get<bool>()) << "line-info builds are not the plain ones";
  const CliResult again = run_cli(tmp, "cache warm " + kConfig + in(tmp));
  EXPECT_NE(again.out.find("3 compiled, 0 hits"), std::string::npos) << again.out;

  const CliResult bad = run_cli(tmp, "cache warm " + kConfig + in(tmp), "DILATRON_JIT_PTXAS_CHECK=yes");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("DILATRON_JIT_PTXAS_CHECK='yes'"), std::string::npos) << bad.err;
}
