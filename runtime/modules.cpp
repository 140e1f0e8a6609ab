#include "runtime/modules.hpp"

#include "runtime/driver.hpp"

namespace dilatron {

CUfunction ModuleRegistry::function(const cache::Entry& entry) {
  const auto slot = std::make_pair(driver::current_context(), entry.key);
  std::lock_guard lock(mutex_);
  if (auto it = functions_.find(slot); it != functions_.end()) return it->second;
  CUmodule module;
  DILATRON_CU(cuModuleLoadData(&module, entry.cubin.data()));
  CUfunction function;
  DILATRON_CU(cuModuleGetFunction(&function, module, entry.lowered_name().c_str()));
  functions_.emplace(slot, function);
  return function;
}

ModuleRegistry& ModuleRegistry::global() {
  static ModuleRegistry registry;
  return registry;
}

}  // namespace dilatron
