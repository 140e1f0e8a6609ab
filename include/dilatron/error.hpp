// The one exception type of the library. Errors from driver, NVRTC or NCCL calls carry the call and its
// status code; validation and I/O errors carry only a message naming the offending value.
#pragma once

#include <stdexcept>
#include <string>

namespace dilatron {

// What went wrong, for callers that branch on it (the C ABI's status codes).
enum class ErrorKind {
  invalid,    // bad configuration, shape, dtype, layout, file or flag
  cuda,       // the driver, a GPU or NVRTC is missing, or one of their calls failed
  transport,  // a ring's transport failed: a caller-provided exchange reported an error
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, ErrorKind kind = ErrorKind::invalid)
      : std::runtime_error(message), kind_(kind) {}
  Error(std::string call, int code, const std::string& message)
      : std::runtime_error(call + " failed (" + std::to_string(code) + "): " + message),
        call_(std::move(call)),
        code_(code),
        kind_(ErrorKind::cuda) {}

  // Empty for errors that did not come from an external API call.
  const std::string& call() const noexcept { return call_; }
  int code() const noexcept { return code_; }
  ErrorKind kind() const noexcept { return kind_; }

 private:
  std::string call_;
  int code_ = 0;
  ErrorKind kind_;
};

}  // namespace dilatron
