// Output files of a command, checked and opened before any work: an output may not be an input or
// another output (after resolving links), nor a directory, socket or block device, and its directory
// must exist and be writable. Nothing appears under an output's name until commit(), which publishes all
// or none; a replaced file keeps its mode (and owner, for root). An existing character device or FIFO
// is written in place (common/atomic_file.hpp).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/atomic_file.hpp"

namespace dilatron::cli {

struct NamedPath {
  std::string flag;  // e.g. "--out", for messages
  std::filesystem::path path;
};

class Outputs {
 public:
  // Throws UsageError for a clash or a missing directory, Error when a temporary file cannot be made.
  Outputs(const std::vector<NamedPath>& inputs, const std::vector<NamedPath>& outputs);

  AtomicFile& file(std::size_t i) { return *files_.at(i); }
  // Publishes every output; if one fails, the ones already published are removed again.
  void commit();

 private:
  std::vector<std::unique_ptr<AtomicFile>> files_;
};

}  // namespace dilatron::cli
