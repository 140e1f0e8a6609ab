// NCCL, opened lazily like the driver: binaries start on machines without it, and only ring runs over
// NCCL fail, naming what is missing. DILATRON_NCCL_LIBRARY overrides where it is looked for.
#pragma once

#include <nccl.h>

#include <string>

#include "common/dynlib.hpp"

namespace dilatron::nccl {

// ncclGetLastError needs NCCL 2.13 or newer; the rest are older.
#define DILATRON_NCCL_CALLS(X) \
  X(ncclGetVersion)            \
  X(ncclGetErrorString)        \
  X(ncclGetLastError)          \
  X(ncclGetUniqueId)           \
  X(ncclCommInitRank)          \
  X(ncclCommDestroy)           \
  X(ncclCommAbort)             \
  X(ncclCommGetAsyncError)     \
  X(ncclCommCount)             \
  X(ncclCommUserRank)          \
  X(ncclCommCuDevice)          \
  X(ncclGroupStart)            \
  X(ncclGroupEnd)              \
  X(ncclSend)                  \
  X(ncclRecv)

struct Api {
  DILATRON_NCCL_CALLS(DILATRON_TABLE_MEMBER)
};

// Throws dilatron::Error naming what is missing.
const Api& api();

struct Version {
  int major = 0, minor = 0, patch = 0;
};
// ncclGetVersion's code: 2.8.4 is 2804 but 2.28.9 is 22809 (the encoding changed with 2.9).
Version decode_version(int code) noexcept;

// What `dilatron info` reports. Never throws: a missing library is described in `problem`.
struct Status {
  bool loaded = false;
  std::string library;  // the file that opened
  Version version;
  std::string problem;
};
Status probe() noexcept;

// Throws dilatron::Error(call, code, NCCL's description and its last error message) when result is
// neither ncclSuccess nor ncclInProgress (a non-blocking communicator still working).
void check(ncclResult_t result, const char* call);

}  // namespace dilatron::nccl

// Checks an NCCL call made through the table: DILATRON_NCCL(ncclGroupStart()).
#define DILATRON_NCCL(call) ::dilatron::nccl::check(::dilatron::nccl::api().call, #call)
