// Hot loops are compiled several times (AVX-512, AVX2, baseline x86-64) and picked at
// run time for the running CPU, so one portable binary still uses wide vectors.
// No FMA target is listed: results stay identical on every CPU (multiply, then add).
//
// Two mechanisms:
// - DC_ONNX_HOT (GCC target_clones): the same source built per target, for loops whose
//   vectors GCC picks itself (auto-vectorised, or generic vectors no wider than 16 bytes);
// - DC_ONNX_TARGET_AVX512 / _AVX2 on explicit per-ISA functions, chosen through isa():
//   for loops that hold a register type of the target's own width (panel.h), since a
//   generic vector wider than the target's registers is kept in memory.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>

#ifndef DC_ONNX_HOT  // -DDC_ONNX_HOT= builds the baseline only (for comparisons)
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(__clang__)
#define DC_ONNX_HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DC_ONNX_HOT
#endif
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#define DC_ONNX_X86 1
#define DC_ONNX_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl")))
#define DC_ONNX_TARGET_AVX2 __attribute__((target("avx2")))
#endif

namespace dc_onnx {

// The instruction sets the explicit paths are written for, in increasing order.
enum class Isa { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "scalar";
  }
}

// The widest path this CPU runs, lowered by the environment variable DC_ONNX_ISA
// (`avx512`, `avx2` or `scalar`; read once, at the first call). A request above what
// the CPU has is capped to the CPU; an unknown value is ignored. DC_ONNX_SCALAR_DOT=1
// (the older switch) means `scalar`. `scalar` = baseline x86-64 (SSE2 vectors, no
// gathers); every path gives the same bits, so this only changes speed.
inline Isa isa() {
  static const Isa chosen = [] {
    Isa cpu = Isa::kBaseline;
#ifdef DC_ONNX_X86
    if (__builtin_cpu_supports("avx2")) cpu = Isa::kAvx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
      cpu = Isa::kAvx512;
#endif
    Isa want = cpu;
    if (const char* v = std::getenv("DC_ONNX_ISA")) {
      if (std::strcmp(v, "avx512") == 0) want = Isa::kAvx512;
      if (std::strcmp(v, "avx2") == 0) want = Isa::kAvx2;
      if (std::strcmp(v, "scalar") == 0) want = Isa::kBaseline;
    }
    if (const char* v = std::getenv("DC_ONNX_SCALAR_DOT"); v != nullptr && *v != '\0')
      want = Isa::kBaseline;
    return want < cpu ? want : cpu;
  }();
  return chosen;
}

// Whether a loop may gather floats rather than load them one by one: on the AVX-512 path,
// unless Linux reports the Gather Data Sampling microcode mitigation, which makes gathers
// several times slower (Skylake to Ice Lake / Tiger Lake CPUs). Read once.
inline bool fast_gathers() {
  static const bool fast = [] {
    if (isa() != Isa::kAvx512) return false;
    std::FILE* f = std::fopen("/sys/devices/system/cpu/vulnerabilities/gather_data_sampling", "r");
    if (f == nullptr) return true;
    char line[64] = {};
    const bool read = std::fgets(line, sizeof line, f) != nullptr;
    std::fclose(f);
    return !(read && std::strncmp(line, "Mitigation", 10) == 0);
  }();
  return fast;
}

}  // namespace dc_onnx
