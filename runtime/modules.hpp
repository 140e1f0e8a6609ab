// The last step of the JIT pipeline: cached CUBINs loaded into CUDA contexts. One module per (context,
// kernel), loaded once and kept for the life of the process (a context the caller destroys must not be
// reused with this registry).
#pragma once

#include <cuda.h>

#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "cache/entry.hpp"

namespace dilatron {

class ModuleRegistry {
 public:
  // The kernel's function in the current context.
  CUfunction function(const cache::Entry& entry);

  static ModuleRegistry& global();

 private:
  std::mutex mutex_;
  std::map<std::pair<CUcontext, std::string>, CUfunction> functions_;
};

}  // namespace dilatron
