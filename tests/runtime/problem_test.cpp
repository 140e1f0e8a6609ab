// Validation: every bad input is an error that names the offending value.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "runtime/problem.hpp"
#include "tests/support/dense_reference.hpp"
#include "tests/support/expect_error.hpp"

using namespace dilatron;
using dilatron::test::expect_error;

namespace {

struct Tensors {
  std::vector<float> q, k, v, out, lse;
  Shape4 q_shape, kv_shape;
  Tensors(Shape4 qs, Shape4 kvs) : q_shape(qs), kv_shape(kvs) {
    auto n = [](Shape4 s) { return std::size_t(std::max<std::int64_t>(0, s[0] * s[1] * s[2] * s[3])); };
    q.resize(n(qs) + 1);
    k.resize(n(kvs) + 1);
    v.resize(n(kvs) + 1);
    out.resize(n(qs) + 1);
    lse.resize(n(qs) + 1);
  }
  Problem validate(const Config& c) {
    const auto qv = TensorView::contiguous(q.data(), DType::f32, q_shape);
    const auto kv = TensorView::contiguous(k.data(), DType::f32, kv_shape);
    const auto vv = TensorView::contiguous(v.data(), DType::f32, kv_shape);
    const auto ov = TensorView::contiguous(out.data(), DType::f32, q_shape);
    return dilatron::validate(c, qv, kv, vv, ov, nullptr);
  }
};

Config config(std::vector<std::int64_t> w, std::vector<std::int64_t> r) {
  Config c;
  c.segments = std::move(w);
  c.dilations = std::move(r);
  return c;
}

}  // namespace

TEST(Validate, ConfigErrorsNameTheValue) {
  expect_error([] { validate_config(config({}, {})); }, {"segments is empty"});
  expect_error([] { validate_config(config({8, 16}, {1})); }, {"segments has 2", "dilations has 1"});
  expect_error([] { validate_config(config({8, 0}, {1, 2})); }, {"segments[1] = 0"});
  expect_error([] { validate_config(config({8, -4}, {1, 2})); }, {"segments[1] = -4"});
  expect_error([] { validate_config(config({8, 4}, {1, 0})); }, {"dilations[1] = 0"});
  expect_error([] { validate_config(config({std::int64_t(1) << 41}, {1})); }, {"segments[0] = 2199023255552", "2^40"});
  for (double bad : {0.0, -1.0, double(NAN), double(INFINITY)}) {
    Config c = config({8}, {1});
    c.scale = bad;
    expect_error([&] { validate_config(c); }, {"scale", "finite and > 0"});
  }
  Config good = config({8, 3}, {1, 5});
  good.scale = 0.1;
  EXPECT_NO_THROW(validate_config(good));
}

TEST(Validate, TensorErrorsNameTheShapes) {
  const Config c = config({4}, {1});
  expect_error([&] { Tensors({1, 0, 2, 4}, {1, 0, 2, 4}).validate(c); }, {"q shape [1,0,2,4]", "N (dim 1)"});
  expect_error([&] { Tensors({1, 8, 2, 4}, {1, 8, 2, 0}).validate(c); }, {"k shape [1,8,2,0]", "D (dim 3)"});
  expect_error([&] { Tensors({1, 8, 6, 4}, {1, 8, 4, 4}).validate(c); }, {"6 heads", "4", "divide"});
  expect_error([&] { Tensors({1, 8, 2, 4}, {1, 7, 2, 4}).validate(c); }, {"k shape [1,7,2,4]", "q shape [1,8,2,4]"});
  expect_error([&] { Tensors({2, 8, 2, 4}, {1, 8, 2, 4}).validate(c); }, {"B, N or D"});
  Tensors kv_differ({1, 8, 2, 4}, {1, 8, 2, 4});
  expect_error(
      [&] {
        const auto q = TensorView::contiguous(kv_differ.q.data(), DType::f32, {1, 8, 2, 4});
        const auto k = TensorView::contiguous(kv_differ.k.data(), DType::f32, {1, 8, 2, 4});
        const auto v = TensorView::contiguous(kv_differ.v.data(), DType::f32, {1, 8, 1, 4});
        validate(c, q, k, v, q, nullptr);
      },
      {"v shape [1,8,1,4]", "differ"});
  expect_error(
      [&] {
        const auto q = TensorView::contiguous(kv_differ.q.data(), DType::f32, {1, 8, 2, 4});
        const auto k = TensorView::contiguous(kv_differ.k.data(), DType::f16, {1, 8, 2, 4});
        validate(c, q, k, k, q, nullptr);
      },
      {"share a dtype", "k is f16"});
  expect_error(
      [&] {
        const auto q = TensorView::contiguous(kv_differ.q.data(), DType::f32, {1, 8, 2, 4});
        TensorView k = q;
        k.data = nullptr;
        validate(c, q, k, q, q, nullptr);
      },
      {"k has no data"});
  expect_error(
      [&] {
        const auto q = TensorView::contiguous(kv_differ.q.data(), DType::f32, {1, 8, 2, 4});
        const auto lse = TensorView::contiguous(kv_differ.lse.data(), DType::f32, {1, 8, 2, 1});
        validate(c, q, q, q, q, &lse);
      },
      {"lse must be float32 [1,2,8,1]"});
}

TEST(Validate, HeadGroupsNeedAHeadPerBranch) {
  Config c = config({4, 8, 16}, {1, 2, 4});
  c.mode = Mode::head_groups;
  expect_error([&] { Tensors({1, 16, 2, 4}, {1, 16, 2, 4}).validate(c); }, {"2 heads", "3 branches"});
  EXPECT_NO_THROW(Tensors({1, 16, 3, 4}, {1, 16, 1, 4}).validate(c));
}

TEST(Validate, ResolvesTheDefaultScale) {
  const Problem p = Tensors({2, 5, 4, 16}, {2, 5, 2, 16}).validate(config({4}, {2}));
  EXPECT_EQ(p.batch, 2);
  EXPECT_EQ(p.seq_len, 5);
  EXPECT_EQ(p.heads, 4);
  EXPECT_EQ(p.kv_heads, 2);
  EXPECT_EQ(p.head_dim, 16);
  EXPECT_DOUBLE_EQ(p.scale, 0.25);
}

TEST(Names, ParseAndPrint) {
  EXPECT_EQ(parse_mode("head_groups"), Mode::head_groups);
  EXPECT_EQ(to_string(parse_mode("longnet")), "longnet");
  expect_error([] { parse_mode("dense"); }, {"'dense'"});
  EXPECT_EQ(parse_dtype("bfloat16"), DType::bf16);
  EXPECT_EQ(dtype_size(parse_dtype("fp16")), 2u);
  EXPECT_EQ(parse_dtype("float64"), DType::f64);
  EXPECT_EQ(dtype_size(DType::f64), 8u);
  EXPECT_EQ(to_string(DType::f64), "f64");
  expect_error([] { parse_dtype("int8"); }, {"'int8'", "f64"});
}

// attended_pairs counts exactly the pairs the dense definition's masks allow.
TEST(AttendedPairs, MatchTheDenseMasks) {
  std::mt19937_64 rng(7);
  auto uniform = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng); };
  for (int trial = 0; trial < 300; ++trial) {
    Config c;
    const std::int64_t n = uniform(1, 60), heads = uniform(1, 9), branches = uniform(1, 4);
    for (std::int64_t i = 0; i < branches; ++i) {
      c.segments.push_back(uniform(1, n + 5));
      c.dilations.push_back(uniform(1, 9));
    }
    c.causal = uniform(0, 1) == 1;
    c.mode = heads >= branches && uniform(0, 1) ? Mode::head_groups : Mode::longnet;
    std::int64_t want = 0;
    for (std::int64_t h = 0; h < heads; ++h) {
      for (auto [i, o] : test::dense_head_branches(c, h, heads)) {
        const auto seg = test::dense_selection(n, c.segments[i], c.dilations[i], o);
        for (std::int64_t q = 0; q < n; ++q) {
          for (std::int64_t k = 0; k < n; ++k) want += seg[q] >= 0 && seg[q] == seg[k] && (!c.causal || k <= q);
        }
      }
    }
    ASSERT_EQ(attended_pairs(c, n, heads), want) << "trial " << trial;
  }
}
