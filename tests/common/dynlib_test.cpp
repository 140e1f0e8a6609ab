// load_table: the one way the driver and NVRTC tables are opened and bound, tried on libc.
#include <gtest/gtest.h>

#include <filesystem>

#include <dilatron/error.hpp>

#include <cstring>
#include <random>
#include <unistd.h>

#include "common/dynlib.hpp"

// Declared, never defined: symbols no library has.
extern "C" int dilatron_test_absent_one(void);
extern "C" int dilatron_test_absent_two(void);

namespace {

#define TEST_LIBC_CALLS(X) \
  X(strlen)                \
  X(getpid)
struct Libc {
  TEST_LIBC_CALLS(DILATRON_TABLE_MEMBER)
};

#define TEST_PARTIAL_CALLS(X)  \
  X(strlen)                    \
  X(dilatron_test_absent_one)  \
  X(getpid)                    \
  X(dilatron_test_absent_two)
struct Partial {
  TEST_PARTIAL_CALLS(DILATRON_TABLE_MEMBER)
};

}  // namespace

using namespace dilatron;

TEST(LoadTable, BindsEveryFunctionFromTheFirstCandidateThatOpens) {
  const auto loaded = load_table<Libc>({{"libdilatron-no-such-library.so.0", "libc.so.6", "libm.so.6"}, "libc", "n/a"},
                                       DILATRON_BIND_CALLS(TEST_LIBC_CALLS));
  ASSERT_TRUE(loaded.error.empty()) << loaded.error;
  // The file the loader chose, not the soname asked for: what `dilatron info` shows.
  EXPECT_TRUE(std::filesystem::path(loaded.library).is_absolute()) << loaded.library;
  EXPECT_TRUE(std::filesystem::exists(loaded.library)) << loaded.library;
  EXPECT_NE(loaded.library.find("libc.so.6"), std::string::npos) << loaded.library;
  const Libc& api = loaded.usable();
  EXPECT_EQ(api.getpid(), getpid());
  std::mt19937 rng(21);
  for (int trial = 0; trial < 50; ++trial) {
    const std::string text(rng() % 300, 'x');
    EXPECT_EQ(api.strlen(text.c_str()), text.size());
  }
}

TEST(LoadTable, NamesTheFirstMissingSymbolAndRefusesTheTable) {
  const auto loaded =
      load_table<Partial>({{"libc.so.6"}, "the C library", "n/a"}, DILATRON_BIND_CALLS(TEST_PARTIAL_CALLS));
  EXPECT_NE(loaded.library.find("libc.so.6"), std::string::npos) << loaded.library;
  EXPECT_NE(loaded.error.find("the C library"), std::string::npos) << loaded.error;
  EXPECT_NE(loaded.error.find("libc.so.6 lacks dilatron_test_absent_one"), std::string::npos) << loaded.error;
  EXPECT_EQ(loaded.error.find("absent_two"), std::string::npos) << "only the first missing symbol: " << loaded.error;
  EXPECT_NE(loaded.api.getpid, nullptr) << "symbols after a missing one are still bound";
  try {
    loaded.usable();
    FAIL() << "an incomplete table must not be usable";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), loaded.error);
    EXPECT_EQ(e.kind(), ErrorKind::cuda);
  }
}

TEST(LoadTable, WhenNothingOpensSaysWhatEveryCandidateAnsweredAndWhatToDo) {
  const auto loaded = load_table<Libc>({{"/nonexistent/libfirst.so", "libdilatron-second-missing.so.7"}, "Thing",
                                        "install the thing"},
                                       DILATRON_BIND_CALLS(TEST_LIBC_CALLS));
  EXPECT_TRUE(loaded.library.empty());
  EXPECT_EQ(loaded.api.strlen, nullptr);
  for (const char* needle : {"Thing could not be loaded", "/nonexistent/libfirst.so", "libdilatron-second-missing.so.7",
                             "install the thing"}) {
    EXPECT_NE(loaded.error.find(needle), std::string::npos) << needle << " in " << loaded.error;
  }
  EXPECT_THROW(loaded.usable(), Error);
}
