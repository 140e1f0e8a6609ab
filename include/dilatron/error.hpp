// The one exception type of the library. Errors from driver, NVRTC or NCCL calls carry the call and its
// status code; validation and I/O errors carry only a message naming the offending value.
#pragma once

#include <stdexcept>
#include <string>

namespace dilatron {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
  Error(std::string call, int code, const std::string& message)
      : std::runtime_error(call + " failed (" + std::to_string(code) + "): " + message),
        call_(std::move(call)),
        code_(code) {}

  // Empty for errors that did not come from an external API call.
  const std::string& call() const noexcept { return call_; }
  int code() const noexcept { return code_; }

 private:
  std::string call_;
  int code_ = 0;
};

}  // namespace dilatron
