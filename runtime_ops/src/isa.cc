#include "isa.h"

#include <cstdlib>
#include <cstring>

namespace dc_onnx {
namespace {

bool cpu_has(Isa isa) {
  switch (isa) {
    case Isa::baseline: return true;
#ifdef DC_ONNX_X86_PATHS
    // libgcc's and compiler-rt's checks include the OS saving the wide registers (XCR0).
    case Isa::avx2: return __builtin_cpu_supports("avx2");
    case Isa::avx512: return __builtin_cpu_supports("avx512f");
#else
    case Isa::avx2:
    case Isa::avx512: return false;
#endif
  }
  return false;
}

struct Choice {
  Isa isa = Isa::baseline;
  std::string error;
};

Choice choose() {
  Choice c;
  for (const Isa isa : {Isa::avx512, Isa::avx2, Isa::baseline})
    if (cpu_has(isa)) {
      c.isa = isa;
      break;
    }
  const char* env = std::getenv("DC_ONNX_ISA");
  if (env == nullptr || *env == '\0') return c;
  for (const Isa isa : {Isa::avx512, Isa::avx2, Isa::baseline})
    if (std::strcmp(env, isa_name(isa)) == 0) {
      if (cpu_has(isa))
        c.isa = isa;
      else
        c.error = std::string("DC_ONNX_ISA=") + env + ": this CPU (or this build) has no " +
                  env + " path";
      return c;
    }
  c.error = std::string("DC_ONNX_ISA must be avx512, avx2 or baseline, got '") + env + "'";
  return c;
}

const Choice& choice() {
  static const Choice c = choose();
  return c;
}

}  // namespace

Isa kernel_isa() { return choice().isa; }

const std::string& isa_error() { return choice().error; }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::baseline: return "baseline";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "?";
}

}  // namespace dc_onnx
