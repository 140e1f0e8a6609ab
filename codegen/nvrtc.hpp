// NVRTC, opened lazily like the driver so binaries start on machines without the CUDA toolkit (a
// machine that only loads pre-warmed kernels needs no compiler).
#pragma once

#include <nvrtc.h>

#include <string>

#include "common/dynlib.hpp"

namespace dilatron::nvrtc {

#define DILATRON_NVRTC_CALLS(X) \
  X(nvrtcVersion)               \
  X(nvrtcGetErrorString)        \
  X(nvrtcCreateProgram)         \
  X(nvrtcDestroyProgram)        \
  X(nvrtcAddNameExpression)     \
  X(nvrtcCompileProgram)        \
  X(nvrtcGetProgramLogSize)     \
  X(nvrtcGetProgramLog)         \
  X(nvrtcGetCUBINSize)          \
  X(nvrtcGetCUBIN)              \
  X(nvrtcGetPTXSize)            \
  X(nvrtcGetPTX)                \
  X(nvrtcGetLoweredName)

struct Api {
  DILATRON_NVRTC_CALLS(DILATRON_TABLE_MEMBER)
};

// Throws dilatron::Error naming what is missing. DILATRON_NVRTC_LIBRARY overrides where it is looked for.
const Api& api();

struct Status {
  bool loaded = false;
  std::string library;
  int major = 0, minor = 0;
  std::string problem;
};
Status probe() noexcept;

// Throws dilatron::Error(call, code, NVRTC's description) when result is not NVRTC_SUCCESS.
void check(nvrtcResult result, const char* call);

}  // namespace dilatron::nvrtc
