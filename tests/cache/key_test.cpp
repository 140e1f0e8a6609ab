// The cache key changes when any ingredient changes, and only then.
#include <gtest/gtest.h>

#include <dilatron/version.hpp>

#include <set>

#include "cache/key.hpp"
#include "codegen/templates.hpp"

using namespace dilatron;
using namespace dilatron::cache;

TEST(CacheKey, EveryIngredientChangesIt) {
  const KeyMaterial base{"v1 op=merge_partials", "0123456789abcdef", "13.0", "--gpu-architecture=sm_90a", "sm_90a",
                         "0.1.0", 1};
  std::vector<KeyMaterial> variants(8, base);
  variants[1].spec += " ";
  variants[2].template_hash[0] = '1';
  variants[3].nvrtc = "13.1";
  variants[4].options += " -lineinfo";
  variants[5].arch = "sm_80";
  variants[6].library = "0.1.1";
  variants[7].format = 2;
  std::set<std::string> keys;
  for (const KeyMaterial& m : variants) {
    const std::string key = cache_key(m);
    EXPECT_EQ(key.size(), 32u);
    EXPECT_TRUE(keys.insert(key).second) << key;
  }
  EXPECT_EQ(cache_key(base), cache_key(KeyMaterial(base))) << "deterministic";
  KeyMaterial shifted = base;  // bytes moved between fields must not collide
  shifted.spec += "0";
  shifted.template_hash = shifted.template_hash.substr(1);
  EXPECT_NE(cache_key(shifted), cache_key(base));
}

TEST(CacheKey, MaterialOfASpecNamesThisBuild) {
  codegen::KernelSpec spec;
  spec.arch = "sm_80";
  const KeyMaterial m = key_material(spec);
  EXPECT_EQ(m.spec, spec.canonical());
  EXPECT_EQ(m.template_hash, codegen::template_bundle_hash());
  EXPECT_EQ(m.library, kVersion);
  EXPECT_EQ(m.arch, "sm_80");
  EXPECT_NE(m.options.find("sm_80"), std::string::npos);
  EXPECT_TRUE(usable_here(m));
  KeyMaterial other = m;
  other.nvrtc = "99.0";
  EXPECT_FALSE(usable_here(other));
  EXPECT_TRUE(same_kernel_source(other)) << "another compiler, the same kernel: `cache ls --specs` lists it";
  other.options = "c++ -std=c++20", other.nvrtc = "host c++";
  EXPECT_TRUE(same_kernel_source(other));
  other.template_hash = "0000000000000000";
  EXPECT_FALSE(same_kernel_source(other)) << "older templates: nothing this build runs";
  other = m, other.library = "0.0.1";
  EXPECT_FALSE(same_kernel_source(other));
  EXPECT_EQ(nlohmann::json(m).get<KeyMaterial>(), m);
  spec.arch = "sm_90a";
  EXPECT_NE(cache_key(key_material(spec)), cache_key(m));
}

TEST(CacheKey, LineInfoChangesTheKeyWhileDumpAndPtxasCheckDoNot) {
  codegen::KernelSpec spec;
  spec.arch = "sm_80";
  const codegen::JitOptions plain;
  codegen::JitOptions lines, debug;
  lines.lineinfo = true;
  debug.dump_dir = "/tmp/dilatron-dump";
  debug.ptxas_check = true;
  const KeyMaterial base = key_material(spec, plain), with_lines = key_material(spec, lines);
  EXPECT_NE(with_lines.options.find("-lineinfo"), std::string::npos) << with_lines.options;
  EXPECT_EQ(base.options.find("-lineinfo"), std::string::npos) << base.options;
  EXPECT_NE(cache_key(with_lines), cache_key(base));
  EXPECT_EQ(key_material(spec, debug), base);
  EXPECT_TRUE(usable_here(with_lines, lines));
  EXPECT_FALSE(usable_here(with_lines, plain)) << "a process without line info does not load line-info builds";
  EXPECT_FALSE(usable_here(base, lines));
}
