#include "activation.h"

#include <cmath>
#include <string>
#include <vector>

#include "errors.h"
#include "kernel_info.h"

namespace dc_onnx {
namespace {

std::vector<float> attr_floats(const OrtKernelInfo* info, const char* name) {
  size_t size = 0;
  if (!ok(Ort::GetApi().KernelInfoGetAttributeArray_float(info, name, nullptr, &size))) return {};
  std::vector<float> v(size);
  if (size > 0 && !ok(Ort::GetApi().KernelInfoGetAttributeArray_float(info, name, v.data(), &size)))
    return {};
  return v;
}

template <typename F>
void each(float* y, size_t n, F f) {
  for (size_t i = 0; i < n; ++i) y[i] = f(y[i]);
}

}  // namespace

void Activation::apply(float* y, size_t n) const {
  const float l = lo, h = hi, a = alpha;
  switch (kind) {
    case Kind::kRelu: return each(y, n, [](float v) { return v < 0.0f ? 0.0f : v; });
    case Kind::kClip:
      return each(y, n, [l, h](float v) {
        const float m = v < l ? l : v;
        return h < m ? h : m;
      });
    case Kind::kLeakyRelu: return each(y, n, [a](float v) { return v >= 0.0f ? v : a * v; });
    default: return;
  }
}

Activation read_activation(const OrtKernelInfo* info) {
  Activation act;
  const std::optional<std::string> name = attr_string(info, "activation");
  if (!name) return act;
  const std::vector<float> params = attr_floats(info, "activation_params");
  auto want = [&](size_t count) {
    if (params.size() != count)
      fail("activation '" + *name + "' takes " + std::to_string(count) +
           " activation_params, got " + std::to_string(params.size()));
    for (const float p : params)
      if (std::isnan(p)) fail("activation_params of '" + *name + "' must not be NaN");
  };
  if (*name == "Relu") {
    want(0);
    act.kind = Activation::Kind::kRelu;
  } else if (*name == "Clip") {
    want(2);
    act.kind = Activation::Kind::kClip;
    act.lo = params[0];
    act.hi = params[1];
  } else if (*name == "LeakyRelu") {
    want(1);
    act.kind = Activation::Kind::kLeakyRelu;
    act.alpha = params[0];
  } else {
    fail("unknown activation '" + *name + "' (known: Relu, Clip, LeakyRelu)");
  }
  return act;
}

}  // namespace dc_onnx
