// The lazily loaded driver and NVRTC: binaries start and answer on any machine.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <random>

#include "codegen/nvrtc.hpp"
#include "runtime/driver.hpp"
#include "runtime/loaded_kernels.hpp"

using namespace dilatron;

TEST(Driver, ProbeDescribesWhatIsMissingWithoutThrowing) {
  const driver::Status status = driver::probe();
  if (!status.loaded) {
    EXPECT_NE(status.problem.find("libcuda.so.1"), std::string::npos) << status.problem;
    EXPECT_TRUE(status.devices.empty());
    try {
      driver::api();
      FAIL() << "api() must throw without a driver";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), status.problem);
    }
  } else if (status.devices.empty()) {
    EXPECT_FALSE(status.problem.empty());
  } else {
    EXPECT_GT(status.version, 0);
    for (const auto& d : status.devices) {
      EXPECT_FALSE(d.name.empty());
      EXPECT_GE(d.cc_major, 7);
      EXPECT_GT(d.memory_bytes, 0u);
    }
  }
}

TEST(Driver, CheckTurnsFailuresIntoErrorsNamingTheCall) {
  EXPECT_NO_THROW(driver::check(CUDA_SUCCESS, "cuInit(0)"));
  try {
    driver::check(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc(&p, 1)");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.call(), "cuMemAlloc(&p, 1)");
    EXPECT_EQ(e.code(), int(CUDA_ERROR_OUT_OF_MEMORY));
    EXPECT_NE(std::string(e.what()).find("cuMemAlloc"), std::string::npos);
  }
}

TEST(LoadedKernels, WithoutAGpuLoadingFailsNamingWhatIsMissingAndCachesNothing) {
  const driver::Status status = driver::probe();
  if (!status.devices.empty()) GTEST_SKIP() << "a GPU is here: tests/runtime/kernels_gpu_test.cpp loads real kernels";
  std::mt19937 rng(31);
  cache::Entry entry;
  entry.meta.key = std::to_string(rng());
  entry.meta.lowered_name = "_Z6kernelv";
  entry.meta.kernel = "test kernel";
  entry.cubin.resize(64 + rng() % 64);
  for (char& c : entry.cubin) c = char(rng());
  for (int attempt = 0; attempt < 2; ++attempt) {  // a failure is not remembered as a loaded kernel
    try {
      LoadedKernels::global().kernel(entry);
      FAIL() << "loaded a kernel without a GPU";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::cuda);
      if (!status.loaded) {
        EXPECT_NE(std::string(e.what()).find("libcuda.so.1"), std::string::npos) << e.what();
      }
    }
  }
  EXPECT_THROW(allow_dynamic_shared(nullptr, 64 << 10), Error);
}

TEST(Nvrtc, LoadsTheToolkitCompiler) {
  const nvrtc::Status status = nvrtc::probe();
  ASSERT_TRUE(status.loaded) << status.problem;
  EXPECT_TRUE(status.problem.empty()) << status.problem;
  EXPECT_GE(status.major, 12);
}
