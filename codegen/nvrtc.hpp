// NVRTC, opened lazily like the driver so binaries start on machines without the CUDA toolkit (a
// machine that only loads pre-warmed kernels needs no compiler).
#pragma once

#include <nvrtc.h>

#include <string>

namespace dilatron::nvrtc {

#define DILATRON_NVRTC_CALLS(X) \
  X(nvrtcVersion)               \
  X(nvrtcGetErrorString)

struct Api {
#define DILATRON_NVRTC_MEMBER(name) decltype(&::name) name = nullptr;
  DILATRON_NVRTC_CALLS(DILATRON_NVRTC_MEMBER)
#undef DILATRON_NVRTC_MEMBER
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

}  // namespace dilatron::nvrtc
