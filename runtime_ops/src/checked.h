// Overflow-checked size arithmetic for buffers whose size follows from attributes and
// input shapes: an overflow fails the run (naming what was computed) instead of
// wrapping into a small allocation that the kernel would then overrun.
#pragma once

#include <cstdint>
#include <string>

#include "errors.h"

namespace dc_onnx {

inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    fail_input(std::string(what) + " overflows 64 bits (" + std::to_string(a) + " * " +
               std::to_string(b) + ")");
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r))
    fail_input(std::string(what) + " overflows 64 bits (" + std::to_string(a) + " + " +
               std::to_string(b) + ")");
  return r;
}

}  // namespace dc_onnx
