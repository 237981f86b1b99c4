// Overflow-checked integer arithmetic for every size derived from attributes, side-file
// fields or input shapes. A product that wraps would size a buffer too small, index past
// it or divide by zero (a 2^62 stride once killed the process with SIGFPE), so such sizes
// go through these helpers, which throw instead. Header-only and free of ORT, so the
// standalone decoder uses them too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace dc_onnx {

// What the helpers throw; `what` names the quantity, the layer prefix is added by
// with_layer (kernel_info.h).
class SizeOverflow : public std::overflow_error {
 public:
  explicit SizeOverflow(const std::string& what)
      : std::overflow_error(what + " overflows 64-bit integer arithmetic") {}
};

inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) throw SizeOverflow(what);
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) throw SizeOverflow(what);
  return r;
}

// A non-negative element count as size_t; `what` names it when negative.
inline size_t checked_size(int64_t v, const char* what) {
  if (v < 0) throw SizeOverflow(std::string(what) + " (negative)");
  return static_cast<size_t>(v);
}

}  // namespace dc_onnx
