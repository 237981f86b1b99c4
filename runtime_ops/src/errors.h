// The one exception type of the library. Kernels throw it; the op adapter
// (custom_op.h) turns it into an OrtStatus so no C++ exception reaches ORT.
#pragma once

#include <stdexcept>
#include <string>

#include "onnxruntime_c_api.h"

namespace dc_onnx {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg, OrtErrorCode code = ORT_INVALID_GRAPH)
      : std::runtime_error(msg), code_(code) {}
  OrtErrorCode code() const noexcept { return code_; }

 private:
  OrtErrorCode code_;
};

// Format errors found while loading a layer: the model or side file is bad.
[[noreturn]] inline void fail(const std::string& msg) { throw Error(msg, ORT_INVALID_GRAPH); }

// Errors found at run time: the caller fed an input of the wrong shape.
[[noreturn]] inline void fail_input(const std::string& msg) {
  throw Error(msg, ORT_INVALID_ARGUMENT);
}

}  // namespace dc_onnx
