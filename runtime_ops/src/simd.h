// Hot loops are compiled several times (AVX-512, AVX2, baseline x86-64) and picked at
// load time for the running CPU, so one portable binary still uses wide vectors.
// No FMA target is listed: results stay identical on every CPU (multiply, then add).
#pragma once

#ifndef DC_ONNX_HOT  // -DDC_ONNX_HOT= builds the baseline only (for comparisons)
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(__clang__)
#define DC_ONNX_HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DC_ONNX_HOT
#endif
#endif
