// The index math every kernel compiles, checked against enumeration straight from the definition.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <vector>

#include "templates/dilatron/index.cuh"

namespace ix = dilatron::index;

TEST(Index, SegmentsCoverEveryRowOnceWithAPartialTail) {
  for (long long n = 1; n <= 40; ++n) {
    for (long long w = 1; w <= 45; ++w) {
      std::vector<int> covered(static_cast<std::size_t>(n), 0);
      for (long long s = 0; s < ix::num_segments(n, w); ++s) {
        ASSERT_LT(ix::segment_begin(s, w), ix::segment_end(s, w, n));
        for (long long row = ix::segment_begin(s, w); row < ix::segment_end(s, w, n); ++row) ++covered[row];
      }
      for (int c : covered) ASSERT_EQ(c, 1) << "n=" << n << " w=" << w;
    }
  }
}

TEST(Index, SelectedRowsMatchEnumerationIncludingRLargerThanW) {
  for (long long length = 0; length <= 30; ++length) {
    for (long long r = 1; r <= 34; ++r) {
      for (long long o = 0; o < r; ++o) {
        std::vector<long long> expected;  // local rows o + j*r below the segment end
        for (long long j = 0; o + j * r < length; ++j) expected.push_back(o + j * r);
        ASSERT_EQ(ix::selected_count(length, o, r), static_cast<long long>(expected.size()))
            << "length=" << length << " r=" << r << " o=" << o;
        for (std::size_t j = 0; j < expected.size(); ++j) {
          // Segment 3 of a w=length layout: global rows shift by 3*length.
          ASSERT_EQ(ix::selected_row(3, length, o, r, static_cast<long long>(j)), 3 * length + expected[j]);
        }
        const std::set<long long> chosen(expected.begin(), expected.end());
        for (long long local = 0; local < length; ++local) {
          ASSERT_EQ(ix::is_selected(5 * length + local, length, o, r), chosen.count(local) == 1);
        }
      }
    }
  }
}

TEST(Index, LongnetOffsetsAreContiguousHeadBlocksBelowR) {
  for (long long heads = 1; heads <= 40; ++heads) {
    for (long long r = 1; r <= 50; ++r) {
      const long long block = (heads + r - 1) / r;
      long long previous = 0;
      for (long long h = 0; h < heads; ++h) {
        const long long o = ix::longnet_offset(h, heads, r);
        ASSERT_LT(o, r);
        ASSERT_EQ(o, h / block);
        ASSERT_TRUE(o == previous || o == previous + 1) << "blocks must be contiguous";
        previous = o;
      }
    }
  }
}

TEST(Index, HeadGroupsAreContiguousWithTheFirstOnesLarger) {
  for (long long heads = 1; heads <= 40; ++heads) {
    for (long long groups = 1; groups <= heads; ++groups) {
      std::vector<long long> size(static_cast<std::size_t>(groups), 0);
      long long previous = 0;
      for (long long h = 0; h < heads; ++h) {
        const long long g = ix::head_group_of(h, heads, groups);
        ASSERT_GE(g, previous);
        ASSERT_LE(g, previous + 1);
        ASSERT_GE(h, ix::head_group_begin(g, heads, groups));
        ASSERT_LT(h, ix::head_group_begin(g + 1, heads, groups));
        ++size[static_cast<std::size_t>(g)];
        previous = g;
      }
      for (long long g = 0; g < groups; ++g) {
        ASSERT_EQ(size[static_cast<std::size_t>(g)], heads / groups + (g < heads % groups ? 1 : 0));
      }
      ASSERT_EQ(ix::head_group_begin(groups, heads, groups), heads);
    }
  }
}

TEST(Index, HeadGroupsOffsetAndKvHead) {
  EXPECT_EQ(ix::head_groups_offset(0, 1), 0);
  EXPECT_EQ(ix::head_groups_offset(3, 2), 1);
  EXPECT_EQ(ix::head_groups_offset(2, 6), 2);
  for (long long kv = 1; kv <= 8; ++kv) {
    for (long long ratio = 1; ratio <= 5; ++ratio) {
      for (long long h = 0; h < kv * ratio; ++h) ASSERT_EQ(ix::kv_head(h, kv * ratio, kv), h / ratio);
    }
  }
}

TEST(Index, SixtyFourBitRows) {
  const long long n = 3'000'000'000LL, w = 1'000'000'000LL;
  EXPECT_EQ(ix::num_segments(n, w), 3);
  EXPECT_EQ(ix::selected_row(2, w, 5, 6, 10), 2 * w + 65);
  EXPECT_EQ(ix::selected_count(w, 5, 6), (w - 5 + 5) / 6);
}

TEST(Index, SelectedBeforeAndNthSelectedWalkTheSelectedRowsInOrder) {
  for (long long w = 1; w <= 13; ++w) {
    for (long long r = 1; r <= 15; ++r) {
      for (long long o = 0; o < r; ++o) {
        std::vector<long long> rows;  // every selected row of a 50-row sequence, by enumeration
        for (long long row = 0; row < 50; ++row) {
          if (ix::is_selected(row, w, o, r)) rows.push_back(row);
        }
        for (long long x = 0; x <= 50; ++x) {
          long long before = 0;
          for (long long row : rows) before += row < x;
          ASSERT_EQ(ix::selected_before(x, w, o, r), before) << "w=" << w << " r=" << r << " o=" << o << " x=" << x;
        }
        for (std::size_t j = 0; j < rows.size(); ++j) ASSERT_EQ(ix::nth_selected(static_cast<long long>(j), w, o, r), rows[j]);
      }
    }
  }
}

TEST(Index, BranchOffsetFollowsTheMode) {
  for (long long heads = 1; heads <= 12; ++heads) {
    for (long long branches = 1; branches <= heads; ++branches) {
      for (long long h = 0; h < heads; ++h) {
        for (long long i = 0; i < branches; ++i) {
          const long long r = i + 2;
          EXPECT_EQ(ix::branch_offset(ix::kLongnet, h, heads, i, branches, r), ix::longnet_offset(h, heads, r));
          const bool member = ix::head_group_of(h, heads, branches) == i;
          EXPECT_EQ(ix::branch_offset(ix::kHeadGroups, h, heads, i, branches, r), member ? i % r : -1);
        }
      }
    }
  }
}

TEST(Index, RingRunsMatchEnumeration) {
  // selected_in, segment_keys and visible_keys against walking every row.
  for (long long w = 1; w <= 9; ++w) {
    for (long long r = 1; r <= 11; ++r) {
      for (long long o = 0; o < r; ++o) {
        for (long long begin = 0; begin <= 24; ++begin) {
          for (long long end = begin; end <= 26; ++end) {
            std::vector<long long> rows;
            for (long long row = begin; row < end; ++row) {
              if (ix::is_selected(row, w, o, r)) rows.push_back(row);
            }
            const ix::RowRun run = ix::selected_in(begin, end, w, o, r);
            ASSERT_EQ(run.count, static_cast<long long>(rows.size())) << w << " " << r << " " << o << " [" << begin << "," << end << ")";
            if (!rows.empty()) {
              ASSERT_EQ(run.first, rows.front());
            }
            for (long long row : rows) {
              std::vector<long long> keys;  // rows of row's segment in [begin, end), selected alike
              for (long long key : rows) {
                if (key / w == row / w) keys.push_back(key);
              }
              const ix::RowRun own = ix::segment_keys(row, w, o, r, begin, end);
              ASSERT_EQ(own.count, static_cast<long long>(keys.size()));
              ASSERT_EQ(own.first, keys.front());
              for (std::size_t j = 0; j < keys.size(); ++j) ASSERT_EQ(own.first + static_cast<long long>(j) * r, keys[j]);
              long long earlier = 0;
              for (long long key : keys) earlier += key <= row;
              ASSERT_EQ(ix::visible_keys(row, own.first, own.count, r, true), earlier);
              ASSERT_EQ(ix::visible_keys(row, own.first, own.count, r, false), own.count);
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(ix::visible_keys(3, 5, 4, 2, true), 0) << "every key after the query";
  EXPECT_EQ(ix::visible_keys(100, 5, 4, 2, true), 4) << "every key before it";
}
