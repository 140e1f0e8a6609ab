// Every device template instantiates and compiles to CUBIN for sm_80 and sm_90a through NVRTC.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "autotune/policy.hpp"
#include "autotune/required_kernels.hpp"
#include "codegen/compiler.hpp"
#include "codegen/render.hpp"
#include "codegen/templates.hpp"
#include "tests/support/temp_dir.hpp"

#include <dilatron/error.hpp>

using namespace dilatron;
using namespace dilatron::codegen;

namespace {

std::vector<KernelSpec> one_of_each_template() {
  std::vector<KernelSpec> specs;
  for (const char* arch : {"sm_80", "sm_90a"}) {
    for (DType dtype : {DType::f16, DType::bf16}) {
      for (Op op : {Op::pack_rows, Op::unpack_rows, Op::merge_partials, Op::clear_output, Op::finish_output,
                    Op::attention_forward, Op::attention_partial_merge, Op::attention_block,
                    Op::attention_block_backward}) {
        KernelSpec s;
        s.op = op;
        s.dtype = dtype;
        s.head_dim = dtype == DType::f16 ? 64 : 128;
        s.arch = arch;
        if (op != Op::merge_partials && op != Op::clear_output && op != Op::finish_output) s.branches = {{16384, 6}};
        if (op == Op::unpack_rows || op == Op::attention_forward || op == Op::attention_block_backward) {
          s.mode = Mode::head_groups, s.group = 2, s.groups = 3;
        }
        s.causal = op == Op::attention_forward;
        specs.push_back(autotune::with_tiles(s));
      }
    }
    KernelSpec f32_merge;
    f32_merge.dtype = DType::f32;
    f32_merge.head_dim = 96;
    f32_merge.arch = arch;
    specs.push_back(f32_merge);
  }
  return specs;
}

}  // namespace

TEST(Templates, AreEmbeddedWithAStableBundleHash) {
  std::set<std::string> names;
  for (const TemplateFile& f : template_files()) {
    names.insert(std::string(f.name));
    EXPECT_FALSE(f.text.empty()) << f.name;
  }
  for (const char* expected : {"dilatron/index.cuh", "dilatron/args.cuh", "dilatron/types.cuh", "dilatron/pack.cuh",
                               "dilatron/merge.cuh", "dilatron/ptx.cuh", "dilatron/attention.cuh", "dilatron/ring.cuh"}) {
    EXPECT_TRUE(names.count(expected)) << expected;
  }
  EXPECT_EQ(template_bundle_hash().size(), 16u);
  EXPECT_EQ(template_bundle_hash(), template_bundle_hash());
}

// DILATRON_TEMPLATES_DIR's reader: a copy of the templates reads back as the embedded set with the same
// hash; an edit changes the hash; a folder without templates is an error naming it.
TEST(Templates, ADirectoryCopyReadsBackAndItsEditsChangeTheHash) {
  test::TempDir dir;
  for (const TemplateFile& f : embedded_template_files()) {
    std::filesystem::create_directories((dir / std::string(f.name)).parent_path());
    std::ofstream(dir / std::string(f.name), std::ios::binary) << f.text;
  }
  std::ofstream(dir / "README.txt") << "not a template";
  const std::vector<TemplateFile> copy = read_template_dir(dir.path());
  ASSERT_EQ(copy.size(), embedded_template_files().size());
  for (std::size_t i = 0; i < copy.size(); ++i) {
    EXPECT_EQ(copy[i].name, embedded_template_files()[i].name);
    EXPECT_EQ(copy[i].text, embedded_template_files()[i].text);
  }
  EXPECT_EQ(bundle_hash(copy), bundle_hash(embedded_template_files()));
  std::ofstream(dir / "dilatron/pack.cuh", std::ios::app) << "// an edit\n";
  EXPECT_NE(bundle_hash(read_template_dir(dir.path())), bundle_hash(embedded_template_files()));

  test::TempDir empty;
  EXPECT_THROW(read_template_dir(dir / "missing"), Error);
  try {
    read_template_dir(empty.path());
    ADD_FAILURE() << "an empty folder was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds no dilatron/*.cuh"), std::string::npos) << e.what();
  }
}

TEST(Render, IsATinyTranslationUnitInstantiatingTheTemplate) {
  KernelSpec s;
  s.op = Op::pack_rows;
  s.branches = {{2048, 6}};
  const RenderedKernel r = render(s);
  EXPECT_NE(r.source.find("#include \"dilatron/pack.cuh\""), std::string::npos);
  EXPECT_NE(r.source.find(s.canonical()), std::string::npos);
  EXPECT_NE(r.source.find("template __global__ void " + r.name_expression), std::string::npos);
  EXPECT_EQ(r.name_expression, "dilatron::move_rows<dilatron::bf16, 128, 2048LL, 6LL, 0, 0, 1, true, 128>");
  EXPECT_LE(std::count(r.source.begin(), r.source.end(), '\n'), 4);
}

TEST(Compile, EveryKernelOpBuildsForSm80AndSm90aWithoutSpills) {
  for (const KernelSpec& spec : one_of_each_template()) {
    SCOPED_TRACE(spec.canonical());
    const CompiledKernel k = compile(spec);
    ASSERT_GE(k.cubin.size(), 4u);
    EXPECT_EQ(std::string(k.cubin.data(), 4), "\x7f" "ELF") << "NVRTC must emit CUBIN, not PTX";
    const std::string function = spec.op == Op::pack_rows || spec.op == Op::unpack_rows ? "move_rows"
                                 : is_attention(spec.op)                              ? "attention_forward"
                                 : is_backward_attention(spec.op)                     ? "attention_backward"
                                                                                      : std::string(to_string(spec.op));
    EXPECT_NE(k.lowered_name.find(function), std::string::npos) << k.lowered_name;
    EXPECT_GT(k.report.registers, 0) << k.log;
    EXPECT_EQ(k.report.spill_bytes, 0) << k.log;
    EXPECT_NE(k.log.find(spec.arch.substr(0, 5)), std::string::npos) << "ptxas report for the target: " << k.log;
    EXPECT_GT(k.compile_ms, 0);
  }
}

// The decode step's kernels for the LongNet preset's branches, both modes, at the head dims decoding
// takes (multiples of 32), without spills or stack.
TEST(Compile, DecodeKernelsBuildForSm80AndSm90aWithoutSpills) {
  for (const char* arch : {"sm_80", "sm_90a"}) {
    for (const auto& [dtype, head_dim, mode] : {std::tuple{DType::bf16, 128, Mode::longnet}, std::tuple{DType::f16, 64, Mode::head_groups},
                                                std::tuple{DType::bf16, 256, Mode::longnet}}) {
      autotune::Workload w;
      w.config.segments = {2048, 4096, 8192, 16384, 32768};
      w.config.dilations = {1, 2, 4, 6, 12};
      w.config.mode = mode;
      w.config.causal = true;
      w.dtype = dtype;
      w.head_dim = head_dim;
      w.arch = arch;
      const std::vector<KernelSpec> specs = autotune::decode_kernels(w);
      ASSERT_EQ(specs.size(), 7u);
      for (const KernelSpec& s : specs) {
        SCOPED_TRACE(s.label());
        const CompiledKernel k = compile(s);
        EXPECT_NE(k.lowered_name.find(std::string(to_string(s.op))), std::string::npos) << k.lowered_name;
        EXPECT_GT(k.report.registers, 0) << k.log;
        EXPECT_EQ(k.report.spill_bytes, 0) << k.log;
        EXPECT_EQ(k.report.stack_bytes, 0) << k.log;
      }
    }
  }
}

TEST(Compile, RingKernelsBuildForSm80AndSm90aWithoutSpills) {
  // Head dims at both ends of what KernelSpec allows for the row kernels: the executor packs blocks
  // (ring_pack), clears its fp32 accumulator with clear_output<float> and rounds it to O with
  // finish_output; the backward's gradient_prepare and ring_unpack_add (fp32 partials).
  for (const char* arch : {"sm_80", "sm_90a"}) {
    for (const auto& [dtype, head_dim] : {std::pair{DType::bf16, 8}, std::pair{DType::f16, 64}, std::pair{DType::bf16, 128},
                                          std::pair{DType::f16, 512}}) {
      for (Op op : {Op::ring_pack, Op::finish_output, Op::clear_output, Op::gradient_prepare, Op::ring_unpack_add}) {
        KernelSpec s;
        s.op = op;
        s.dtype = op == Op::clear_output || op == Op::ring_unpack_add ? DType::f32 : dtype;
        s.head_dim = head_dim;
        s.arch = arch;
        s = autotune::with_tiles(s);
        SCOPED_TRACE(s.label());
        const CompiledKernel k = compile(s);
        EXPECT_NE(k.lowered_name.find(std::string(to_string(op))), std::string::npos) << k.lowered_name;
        EXPECT_GT(k.report.registers, 0) << k.log;
        EXPECT_EQ(k.report.spill_bytes, 0) << k.log;
        EXPECT_EQ(k.report.stack_bytes, 0) << k.log;
      }
    }
  }
}

TEST(Compile, ParsesThePtxasReport) {
  const PtxasReport r = parse_ptxas_report(
      "ptxas info    : Compiling entry function '_Z1kv' for 'sm_90a'\n"
      "ptxas info    : Function properties for _Z1kv\n"
      "ptxas         .     24 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads\n"
      "ptxas info    : Used 168 registers, used 1 barriers, 33792 bytes smem, 448 bytes cmem[0]\n");
  EXPECT_EQ(r.registers, 168);
  EXPECT_EQ(r.spill_bytes, 28);
  EXPECT_EQ(r.shared_bytes, 33792);
  EXPECT_EQ(r.stack_bytes, 24);
  const PtxasReport none = parse_ptxas_report("");
  EXPECT_EQ(none.registers, 0);
  EXPECT_EQ(none.spill_bytes, 0);
}

TEST(Compile, OptionsTargetCubinForTheArch) {
  const auto options = compile_options("sm_90a");
  EXPECT_EQ(options.front(), "--gpu-architecture=sm_90a");
  EXPECT_NE(std::find(options.begin(), options.end(), "--ptxas-options=-v"), options.end());
  EXPECT_FALSE(nvrtc_version().empty());
}

TEST(Templates, BundleHashChangesWithAnyByte) {
  const std::string a = "template <int N> __global__ void k() {}", b = "dilatron/k.cuh";
  const std::string base = bundle_hash({{b, a}});
  std::set<std::string> seen{base};
  for (std::size_t i = 0; i < a.size(); ++i) {
    std::string text = a;
    text[i] ^= 1;
    ASSERT_TRUE(seen.insert(bundle_hash({{b, text}})).second) << "byte " << i;
  }
  std::string name = b;
  name[3] ^= 1;
  EXPECT_TRUE(seen.insert(bundle_hash({{name, a}})).second);
  EXPECT_TRUE(seen.insert(bundle_hash({{b, a}, {b, a}})).second) << "an extra file changes it";
  EXPECT_TRUE(seen.insert(bundle_hash({{b + a.substr(0, 1), a.substr(1)}})).second) << "bytes moved into the name";
}

TEST(Templates, ExpandedSourceCompilesOnItsOwnToTheSameKernel) {
  // What `dilatron gen` prints must be what NVRTC compiles: the expanded unit includes nothing and
  // lowers to the same symbol with the same ptxas report.
  for (const KernelSpec& spec : one_of_each_template()) {
    if (spec.arch != "sm_90a" || spec.dtype != DType::bf16) continue;
    SCOPED_TRACE(spec.label());
    const RenderedKernel rendered = render(spec);
    const std::string expanded = expand_includes(rendered.source);
    EXPECT_EQ(expanded.find("#include"), std::string::npos);
    const std::vector<std::string> included = included_templates(rendered.source);
    ASSERT_FALSE(included.empty());
    EXPECT_EQ(std::set<std::string>(included.begin(), included.end()).size(), included.size()) << "each once";
    for (const std::string& name : included) {
      EXPECT_NE(expanded.find("// ----- begin " + name + " -----"), std::string::npos) << name;
    }
    const CompiledKernel standalone = compile_unit({expanded, rendered.name_expression}, spec.arch, spec.label(), {});
    const CompiledKernel normal = compile(spec, {});
    EXPECT_EQ(standalone.lowered_name, normal.lowered_name);
    EXPECT_EQ(standalone.report.registers, normal.report.registers);
    EXPECT_EQ(standalone.report.spill_bytes, normal.report.spill_bytes);
    EXPECT_EQ(standalone.report.shared_bytes, normal.report.shared_bytes);
  }
}
