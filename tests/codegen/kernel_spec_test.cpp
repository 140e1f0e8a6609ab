// KernelSpec: canonical strings are stable and distinct; validation names the bad field.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <map>
#include <set>

#include "codegen/kernel_spec.hpp"
#include "codegen/render.hpp"

using namespace dilatron;
using namespace dilatron::codegen;

namespace {

KernelSpec pack_spec() {
  KernelSpec s;
  s.op = Op::pack_rows;
  s.branches = {{2048, 6}};
  return s;
}

}  // namespace

TEST(KernelSpec, CanonicalStringIsStable) {
  // This exact text is part of every cache key: changing it silently orphans every cached kernel, so a
  // change here must come with a kFormatVersion bump.
  EXPECT_EQ(pack_spec().canonical(),
            "v1 op=pack_rows dtype=bf16 d=128 branches=2048:6 group=0/1 mode=longnet causal=0 tiles=0x0 warps=4 "
            "stages=0 arch=sm_90a");
  KernelSpec merge;
  merge.dtype = DType::f16;
  merge.head_dim = 64;
  merge.arch = "sm_80";
  EXPECT_EQ(merge.canonical(),
            "v1 op=merge_partials dtype=f16 d=64 branches= group=0/1 mode=longnet causal=0 tiles=0x0 warps=4 stages=0 "
            "arch=sm_80");
}

TEST(KernelSpec, EveryFieldChangesTheCanonicalString) {
  std::vector<KernelSpec> variants(12, pack_spec());
  variants[1].op = Op::unpack_rows;
  variants[2].dtype = DType::f16;
  variants[3].head_dim = 64;
  variants[4].branches = {{2048, 5}};
  variants[5].branches = {{1024, 6}};
  variants[6].mode = Mode::head_groups;
  variants[7].mode = Mode::head_groups, variants[7].groups = 2;
  variants[8].causal = true;
  variants[9].tiles.warps = 8;
  variants[10].tiles.block_m = 64;
  variants[11].arch = "sm_80";
  std::set<std::string> seen;
  for (const KernelSpec& v : variants) EXPECT_TRUE(seen.insert(v.canonical()).second) << v.canonical();
  KernelSpec stages = pack_spec();
  stages.tiles.stages = 2;
  EXPECT_FALSE(seen.count(stages.canonical()));
  KernelSpec two = pack_spec();
  two.branches = {{20, 486}};  // "2048:6" must not read the same as "20:486"
  EXPECT_FALSE(seen.count(two.canonical()));
}

TEST(KernelSpec, ParseReadsBackEveryCanonicalString) {
  std::vector<KernelSpec> specs(6, pack_spec());
  specs[1].op = Op::merge_partials, specs[1].branches = {};
  specs[2].op = Op::attention_backward, specs[2].dtype = DType::f16, specs[2].head_dim = 64, specs[2].causal = true;
  specs[2].tiles = {64, 64, 4, 2};
  specs[3].op = Op::attention_partial_merge, specs[3].mode = Mode::head_groups, specs[3].group = 2, specs[3].groups = 3;
  specs[3].branches = {{4096, 12}}, specs[3].tiles = {128, 32, 4, 3}, specs[3].arch = "sm_80";
  specs[4].op = Op::decode_partial, specs[4].branches = {{2048, 1}, {4096, 2}, {32768, 12}};
  specs[5].op = Op::decode_append, specs[5].dtype = DType::f32, specs[5].arch = "sm_100a";
  for (const KernelSpec& spec : specs) {
    SCOPED_TRACE(spec.canonical());
    EXPECT_EQ(KernelSpec::parse(spec.canonical()), spec);
  }
}

TEST(KernelSpec, ParseRefusesAnythingButACanonicalString) {
  const std::string good = pack_spec().canonical();
  const auto replaced = [&](const std::string& from, const std::string& to) {
    std::string text = good;
    return text.replace(text.find(from), from.size(), to);
  };
  const std::pair<std::string, const char*> bad[] = {
      {"", "begin with 'v1 '"},
      {replaced("v1 ", "v2 "), "begin with 'v1 '"},
      {replaced("pack_rows", "pack_row"), "unknown op 'pack_row'"},
      {replaced(" dtype=bf16", ""), "'dtype='"},
      {replaced("dtype=bf16", "dtype=bfloat16"), "reads back as"},
      {replaced("d=128", "d=0128"), "reads back as"},
      {replaced("d=128", "d=12x"), "d '12x' is not a number"},
      {replaced("2048:6", "2048-6"), "needs the form A:B"},
      {replaced("2048:6", "2048:6,"), "reads back as"},
      {replaced("causal=0", "causal=2"), "reads back as"},
      {replaced("tiles=0x0", "tiles=0"), "needs the form AxB"},
      {replaced("mode=longnet", "mode=dense"), "unknown mode"},
      {good + " extra=1", "reads back as"},
      {replaced("stages=0 ", "stages=0  "), "'arch='"},
      {good.substr(0, good.size() - 12), "'arch='"},
  };
  for (const auto& [text, needle] : bad) {
    try {
      KernelSpec::parse(text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << text << ": " << e.what();
    }
  }
}

TEST(KernelSpec, ValidationNamesTheProblem) {
  auto expect_invalid = [](KernelSpec s, const char* needle) {
    try {
      s.validate();
      ADD_FAILURE() << "accepted " << s.canonical();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  KernelSpec s = pack_spec();
  EXPECT_NO_THROW(s.validate());
  s.arch = "sm_70";
  expect_invalid(s, "older than sm_80");
  s.arch = "gfx90a";
  expect_invalid(s, "gfx90a");
  s = pack_spec(), s.head_dim = 100;
  expect_invalid(s, "head_dim 100");
  s = pack_spec(), s.dtype = DType::f32;
  expect_invalid(s, "f16 or bf16");
  s = pack_spec(), s.tiles.warps = 3;
  expect_invalid(s, "warps = 3");
  s = pack_spec(), s.branches = {};
  expect_invalid(s, "exactly one branch");
  s = pack_spec(), s.branches = {{0, 1}};
  expect_invalid(s, ">= 1");
  s = pack_spec(), s.group = 1;
  expect_invalid(s, "group 1/1");
  s = pack_spec(), s.mode = Mode::head_groups, s.group = 2, s.groups = 2;
  expect_invalid(s, "group 2/2");
  s = pack_spec(), s.causal = true;
  expect_invalid(s, "causal");
  KernelSpec merge;
  merge.branches = {{8, 1}};
  expect_invalid(merge, "merge_partials takes no branches");
  s = pack_spec(), s.head_dim = 12;
  EXPECT_THROW(render(s), Error) << "render validates first";
  for (Op op : {Op::ring_pack, Op::finish_output, Op::gradient_prepare}) {
    KernelSpec ring;
    ring.op = op;
    EXPECT_NO_THROW(ring.validate()) << to_string(op);
    ring.dtype = DType::f32;
    expect_invalid(ring, "f16 or bf16");
    ring.dtype = DType::f16, ring.branches = {{8, 1}};
    expect_invalid(ring, "takes no branches");
    ring.branches = {}, ring.causal = true;
    expect_invalid(ring, "causal");
  }
}

TEST(KernelSpec, AttentionTilesFollowTheKernelsRules) {
  auto expect_invalid = [](KernelSpec s, const char* needle) {
    try {
      s.validate();
      ADD_FAILURE() << "accepted " << s.label();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  KernelSpec s;
  s.op = Op::attention_partial_merge;
  s.branches = {{4096, 2}};
  for (int d : {64, 96, 128}) {
    s.head_dim = d;
    s.tiles = {128, 32, 4, 3};
    EXPECT_NO_THROW(s.validate()) << d;
    s.tiles = {64, 64, 4, 2};  // 16 rows per warp: the shape v1 had, still a candidate
    EXPECT_NO_THROW(s.validate()) << d;
  }
  s.head_dim = 256, s.tiles = {64, 64, 4, 3};
  EXPECT_NO_THROW(s.validate());
  s.tiles = {128, 64, 4, 2};
  expect_invalid(s, "more registers");
  s.head_dim = 32, s.tiles = {128, 64, 4, 2};
  expect_invalid(s, "head_dim 32");
  s.head_dim = 128, s.tiles = {96, 64, 4, 2};
  expect_invalid(s, "16 or 32 query rows");
  s.tiles = {128, 48, 4, 2};
  expect_invalid(s, "block_n = 48");
  s.tiles = {32, 32, 1, 2};
  expect_invalid(s, "warps = 1");
  s.head_dim = 96, s.tiles = {256, 32, 8, 2};  // 256 threads copy the 32-column tail 64 rows at a time
  expect_invalid(s, "multiples of 64");
  s.head_dim = 128, s.tiles = {128, 32, 4, 4};
  expect_invalid(s, "stages = 4");
  s.tiles = {128, 32, 4, 2}, s.mode = Mode::head_groups, s.groups = 2;
  const Op op = s.op;
  s.op = Op::attention_partial;
  expect_invalid(s, "only longnet branches write the accumulator first");
  s.op = Op::attention_partial_merge;  // a ring rank's own rows in head_groups mode, merged with later steps
  EXPECT_NO_THROW(s.validate());
  s.op = op;
  KernelSpec unpack_add;
  unpack_add.op = Op::ring_unpack_add;
  expect_invalid(unpack_add, "adds fp32 gradients");
  unpack_add.dtype = DType::f32;
  EXPECT_NO_THROW(unpack_add.validate());
  unpack_add.branches = {{8, 1}};
  expect_invalid(unpack_add, "takes no branches");
  s.op = Op::attention_forward;
  EXPECT_NO_THROW(s.validate());
  // A ring block's keys are all visible: its kernels take the branch kernels' fields but never causal.
  for (const Op block : {Op::attention_block, Op::attention_block_backward}) {
    KernelSpec b = s;
    b.op = block;
    b.tiles = block == Op::attention_block ? codegen::Tiles{128, 32, 4, 2} : codegen::Tiles{64, 64, 4, 2};
    EXPECT_NO_THROW(b.validate()) << to_string(block);
    b.causal = true;
    expect_invalid(b, "never causal");
    b.causal = false, b.head_dim = 40;
    expect_invalid(b, "head_dim 40");
  }
}

TEST(KernelSpec, LabelsTellApartEveryKernelTheCanonicalStringsDo) {
  // Every valid spec reachable by changing one or two fields of a few bases: distinct binaries must
  // get distinct labels, or `cache ls` and `warm` show two entries under one name.
  std::vector<KernelSpec> bases;
  for (Op op : {Op::pack_rows, Op::unpack_rows, Op::merge_partials, Op::clear_output, Op::finish_output,
                Op::attention_forward, Op::attention_partial, Op::attention_partial_merge, Op::attention_block,
                Op::ring_pack, Op::attention_backward, Op::attention_block_backward, Op::ring_unpack_add}) {
    KernelSpec s;
    s.op = op;
    if (op == Op::ring_unpack_add) s.dtype = DType::f32;
    if (op != Op::merge_partials && op != Op::clear_output && op != Op::finish_output && op != Op::ring_pack &&
        op != Op::ring_unpack_add) {
      s.branches = {{2048, 2}};
    }
    if (is_tiled_attention(op)) s.tiles = {64, 64, 4, 2};
    bases.push_back(s);
  }
  using Mutation = void (*)(KernelSpec&);
  const std::vector<Mutation> mutations = {
      [](KernelSpec&) {},
      [](KernelSpec& s) { s.dtype = DType::f16; },
      [](KernelSpec& s) { s.head_dim = 64; },
      [](KernelSpec& s) { s.arch = "sm_80"; },
      [](KernelSpec& s) { s.causal = true; },
      [](KernelSpec& s) { s.mode = Mode::head_groups, s.group = 1, s.groups = 3; },
      [](KernelSpec& s) { s.mode = Mode::head_groups, s.group = 0, s.groups = 1; },
      [](KernelSpec& s) { s.branches = {{2048, 3}}; },
      [](KernelSpec& s) { s.branches = {{204, 82}}; },
      [](KernelSpec& s) { s.tiles.warps = 2, s.tiles.block_m = s.tiles.block_m ? 32 : 0; },
      [](KernelSpec& s) { s.tiles.block_n = s.tiles.block_n ? 32 : 0; },
      [](KernelSpec& s) { s.tiles.stages = s.tiles.stages ? 3 : 0; },
  };
  std::map<std::string, std::string> label_of_canonical, canonical_of_label;
  for (const KernelSpec& base : bases) {
    for (Mutation first : mutations) {
      for (Mutation second : mutations) {
        KernelSpec s = base;
        first(s);
        second(s);
        try {
          s.validate();
        } catch (const Error&) {
          continue;
        }
        label_of_canonical[s.canonical()] = s.label();
        const auto [it, fresh] = canonical_of_label.emplace(s.label(), s.canonical());
        EXPECT_TRUE(fresh || it->second == s.canonical())
            << "label '" << s.label() << "' names both\n  " << it->second << "\n  " << s.canonical();
      }
    }
  }
  EXPECT_GT(label_of_canonical.size(), 150u) << "the enumeration reaches most fields";
  EXPECT_EQ(label_of_canonical.size(), canonical_of_label.size());
}
