// The C++ tests' one assertion: CHECK(cond) counts the check and, when it fails, prints
// where and counts the failure; each test's main reports both counts and fails if any did.
#pragma once

#include <cstdio>

namespace dc_onnx_test {
inline int g_failures = 0;
inline int g_checks = 0;
}  // namespace dc_onnx_test

#define CHECK(cond)                                                                 \
  do {                                                                              \
    ++dc_onnx_test::g_checks;                                                       \
    if (!(cond)) {                                                                  \
      ++dc_onnx_test::g_failures;                                                   \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                               \
  } while (0)
