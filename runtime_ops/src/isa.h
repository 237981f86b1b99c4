// Which instruction set the hot loops run with: the widest the CPU has (AVX-512F, AVX2,
// or the baseline of the build target: SSE2 on x86-64), or the one the environment
// variable DC_ONNX_ISA forces (`avx512`, `avx2`, `baseline`), read once per process.
// Every path gives the same bits (no FMA, the same order of additions), so forcing one
// only changes the speed; the tests use it to compare the paths.
#pragma once

#include <string>

namespace dc_onnx {

enum class Isa { baseline, avx2, avx512 };

// The path in use: DC_ONNX_ISA if set and valid, else the widest the CPU supports.
Isa kernel_isa();

// Empty, or why DC_ONNX_ISA cannot be honoured (unknown name, or a path this CPU or this
// build lacks); RegisterCustomOps fails with it rather than run another path silently.
const std::string& isa_error();

const char* isa_name(Isa isa);

}  // namespace dc_onnx

// Function attributes for the per-ISA copies of a hot loop (x86-64 with GCC or clang;
// elsewhere only the baseline exists).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DC_ONNX_X86_PATHS 1
#define DC_ONNX_TARGET_AVX2 __attribute__((target("avx2")))
#define DC_ONNX_TARGET_AVX512 __attribute__((target("avx512f")))
#endif
