// The JIT switches on real NVRTC compiles: the dump's files and contents (the CUBIN among them, byte for
// byte), that dumping leaves the CUBIN alone, that line info reaches the binary, and that the ptxas check refuses local memory.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <fstream>
#include <random>
#include <set>

#include "autotune/policy.hpp"
#include "codegen/compiler.hpp"
#include "codegen/render.hpp"
#include "common/file_io.hpp"
#include "tests/support/temp_dir.hpp"

using namespace dilatron;
using namespace dilatron::codegen;

namespace {

KernelSpec random_cheap_spec(std::mt19937& rng) {
  KernelSpec s;
  s.op = std::vector<Op>{Op::merge_partials, Op::clear_output, Op::pack_rows}[rng() % 3];
  s.dtype = rng() % 2 ? DType::f16 : DType::bf16;
  s.head_dim = rng() % 2 ? 64 : 128;
  s.arch = rng() % 2 ? "sm_80" : "sm_90a";
  if (s.op == Op::pack_rows) s.branches = {{std::int64_t(256) << (rng() % 4), std::int64_t(rng() % 5 + 1)}};
  return autotune::with_tiles(s);
}

// file name -> contents, for every file in dir
std::map<std::string, std::string> files_in(const std::filesystem::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& item : std::filesystem::directory_iterator(dir)) out[item.path().filename().string()] = read_file(item.path());
  return out;
}

bool contains(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

// Stores and loads at data-dependent indices of a local array: ptxas must give it a stack frame.
const RenderedKernel kLocalArray{
    "extern \"C\" __global__ void local_array(int* out, int i) {\n"
    "  int a[64];\n"
    "  for (int j = 0; j < 64; ++j) a[j] = j;\n"
    "  for (int j = 0; j < 64; ++j) a[out[j] & 63] += out[j + 64];\n"
    "  out[0] = a[i & 63];\n"
    "}\n",
    "local_array"};

}  // namespace

TEST(JitDump, WritesSourcePtxLogPtxasReportAndCubinAndLeavesTheCubinAlone) {
  std::mt19937 rng(51);
  for (int trial = 0; trial < 3; ++trial) {
    const KernelSpec spec = random_cheap_spec(rng);
    SCOPED_TRACE(spec.canonical());
    test::TempDir dir;
    JitOptions dumping;
    dumping.dump_dir = dir / "nested" / "dump";  // created when missing
    const CompiledKernel plain = compile(spec, JitOptions{});
    const CompiledKernel dumped = compile(spec, dumping);
    EXPECT_EQ(dumped.cubin, plain.cubin);
    EXPECT_EQ(dumped.lowered_name, plain.lowered_name);

    const auto files = files_in(dumping.dump_dir);
    ASSERT_EQ(files.size(), 5u);
    const std::string stem = files.begin()->first.substr(0, files.begin()->first.rfind('.'));
    EXPECT_EQ(stem.rfind(std::string(to_string(spec.op)), 0), 0u) << "named after the label: " << stem;
    for (const char* suffix : {".cu", ".log", ".ptx", ".ptxas", ".cubin"}) {
      ASSERT_TRUE(files.count(stem + suffix)) << suffix;
    }
    EXPECT_EQ(files.at(stem + ".cu"), render(spec).source);
    const std::string& log = files.at(stem + ".log");
    EXPECT_TRUE(contains(log, options_text(compile_options(spec.arch, dumping)))) << log;
    EXPECT_TRUE(contains(log, dumped.log)) << log;
    const std::string& ptx = files.at(stem + ".ptx");
    EXPECT_TRUE(contains(ptx, ".target " + spec.arch)) << ptx.substr(0, 400);
    EXPECT_TRUE(contains(ptx, ".entry " + dumped.lowered_name)) << ptx.substr(0, 400);
    const std::string& ptxas = files.at(stem + ".ptxas");
    EXPECT_TRUE(contains(ptxas, "Used " + std::to_string(dumped.report.registers) + " registers")) << ptxas;
    EXPECT_TRUE(contains(ptxas, "registers " + std::to_string(dumped.report.registers) + ",")) << ptxas;
    EXPECT_EQ(ptxas.rfind("kernel " + spec.label() + "\n", 0), 0u) << ptxas;
    const std::string& cubin = files.at(stem + ".cubin");
    EXPECT_EQ(cubin.substr(0, 4), "\x7f" "ELF") << "the dump holds the CUBIN, not PTX";
    EXPECT_EQ(cubin, std::string(dumped.cubin.begin(), dumped.cubin.end()));
  }
}

TEST(JitDump, RecordsTheDynamicSharedMemoryALaunchNeeds) {
  test::TempDir dir;
  JitOptions dumping;
  dumping.dump_dir = dir.path();
  KernelSpec spec;
  spec.op = Op::attention_forward;
  spec.head_dim = 64;
  spec.branches = {{2048, 1}};
  spec.arch = "sm_80";
  spec = autotune::with_tiles(spec);
  ASSERT_GT(spec.shared_bytes(), 0);
  compile(spec, dumping);
  std::string ptxas;
  for (const auto& [name, text] : files_in(dir.path())) {
    if (name.ends_with(".ptxas")) ptxas = text;
  }
  EXPECT_TRUE(contains(ptxas, ", dynamic shared bytes " + std::to_string(spec.shared_bytes()) + "\n")) << ptxas;
}

TEST(JitDump, KernelsDifferingInOneFieldGetTheirOwnFiles) {
  test::TempDir dir;
  JitOptions dumping;
  dumping.dump_dir = dir.path();
  KernelSpec a;
  a.arch = "sm_80";
  a = autotune::with_tiles(a);
  KernelSpec b = a;
  b.tiles.warps = a.tiles.warps * 2;  // another kernel, differing only in its launch shape
  compile(a, dumping);
  compile(b, dumping);
  std::set<std::string> stems;
  for (const auto& [name, text] : files_in(dir.path())) stems.insert(name.substr(0, name.rfind('.')));
  EXPECT_EQ(stems.size(), 2u);
}

TEST(JitDump, AFailedCompileStillLeavesItsSourceAndLog) {
  test::TempDir dir;
  JitOptions dumping;
  dumping.dump_dir = dir.path();
  const RenderedKernel broken{
      "template <int N> __global__ void broken(int* p) { *p = undeclared_thing + N; }\n"
      "template __global__ void broken<3>(int*);\n",
      "broken<3>"};
  EXPECT_THROW(compile_unit(broken, "sm_80", "broken kernel", dumping), Error);
  const auto files = files_in(dir.path());
  ASSERT_EQ(files.size(), 2u);
  for (const auto& [name, text] : files) {
    EXPECT_EQ(name.rfind("broken-kernel-", 0), 0u) << name;
    if (name.ends_with(".cu")) EXPECT_EQ(text, broken.source);
    else EXPECT_TRUE(name.ends_with(".log") && contains(text, "undeclared_thing")) << name << ": " << text;
  }
}

TEST(JitDump, AnUnwritableDirectoryIsAWarningNotAFailedCompile) {
  test::TempDir dir;
  std::ofstream(dir / "a-file") << "not a directory";
  JitOptions dumping;
  dumping.dump_dir = dir / "a-file" / "dump";
  KernelSpec spec;
  spec.arch = "sm_80";
  ::testing::internal::CaptureStderr();
  const CompiledKernel k = compile(spec, dumping);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(k.cubin, compile(spec, JitOptions{}).cubin);
  EXPECT_TRUE(contains(err, "warning")) << err;
  EXPECT_TRUE(contains(err, dumping.dump_dir.string())) << err;
}

TEST(JitLineInfo, ReachesTheBinary) {
  KernelSpec spec;
  spec.arch = "sm_90a";
  JitOptions lines;
  lines.lineinfo = true;
  const CompiledKernel plain = compile(spec, JitOptions{}), with = compile(spec, lines);
  const std::string plain_bytes(plain.cubin.begin(), plain.cubin.end()), with_bytes(with.cubin.begin(), with.cubin.end());
  EXPECT_NE(plain_bytes, with_bytes);
  EXPECT_FALSE(contains(plain_bytes, ".debug_line"));
  EXPECT_TRUE(contains(with_bytes, ".debug_line")) << "no line table in the CUBIN";
}

TEST(JitPtxasCheck, RefusesAKernelWithAStackFrameAndNamesIt) {
  const CompiledKernel unchecked = compile_unit(kLocalArray, "sm_80", "local array", JitOptions{});
  ASSERT_GT(unchecked.report.stack_bytes, 0) << "the test kernel must use local memory:\n" << unchecked.log;
  JitOptions check;
  check.ptxas_check = true;
  try {
    compile_unit(kLocalArray, "sm_80", "local array", check);
    FAIL() << "a kernel with a stack frame passed the check";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "local array")) << what;
    EXPECT_TRUE(contains(what, std::to_string(unchecked.report.stack_bytes) + "-byte stack frame")) << what;
    EXPECT_TRUE(contains(what, "DILATRON_JIT_PTXAS_CHECK")) << what;
  }
  KernelSpec clean;
  clean.arch = "sm_80";
  EXPECT_NO_THROW(compile(clean, check)) << "kernels without local memory pass";
}
