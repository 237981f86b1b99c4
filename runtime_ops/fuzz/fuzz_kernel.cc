// libFuzzer target over kernel creation and one Run: the real CompressedGemm/MatMul/Conv
// classes, served by the fake ORT API (fake_ort.h) with the fuzzed attributes and a side
// file (fuzz_input.h). Creation must end in a kernel or a dc_onnx::Error; when it made a
// kernel and the input names an X shape, compute runs once on such an X and must end
// the same way. A crash, a sanitizer report, an allocation past libFuzzer's limit or
// any other exception is a finding.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "errors.h"
#include "fake_ort.h"
#include "fuzz_input.h"
#include "ops.h"

namespace {

using dc_onnx_fuzz::FakeNode;
using dc_onnx_fuzz::FakeRun;

constexpr size_t kMaxRunElements = size_t{1} << 16;  // keeps one execution fast

OrtValue tensor(ONNXTensorElementDataType type, dc_onnx::Bytes b, size_t elem_size) {
  OrtValue v;
  v.type = type;
  v.shape = {static_cast<int64_t>(b.size / elem_size)};
  v.data = const_cast<uint8_t*>(b.data);
  return v;
}

// Elements of `shape`, or 0 when a dim is negative or the total passes the cap.
size_t bounded_count(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || d > static_cast<int64_t>(kMaxRunElements)) return 0;
    n *= static_cast<size_t>(d);
    if (n > kMaxRunElements) return 0;
  }
  return n;
}

// A deterministic X of `count` floats; with `non_finite`, some NaN and +-Inf among them.
std::vector<float> make_x(size_t count, bool non_finite) {
  std::vector<float> x(count);
  for (size_t i = 0; i < count; ++i) x[i] = static_cast<float>(i % 7) * 0.25f - 0.5f;
  if (non_finite)
    for (size_t i = 0; i < count; i += 5)
      x[i] = i % 3 == 0 ? std::numeric_limits<float>::quiet_NaN()
                        : (i % 3 == 1 ? std::numeric_limits<float>::infinity()
                                      : -std::numeric_limits<float>::infinity());
  return x;
}

template <typename Kernel>
void create_and_run(FakeNode* node, const dc_onnx_fuzz::FuzzLayer& layer, bool with_bias,
                    bool non_finite) {
  std::unique_ptr<Kernel> kernel;
  try {
    kernel = std::make_unique<Kernel>(dc_onnx_fuzz::kernel_info(node));
  } catch (const dc_onnx::Error&) {
    return;
  }
  const auto xs = layer.ints.find("x_shape");
  if (xs == layer.ints.end()) return;
  const size_t n = bounded_count(xs->second);
  if (n == 0 && !xs->second.empty()) return;
  std::vector<float> x = make_x(n, non_finite);
  OrtValue xv;
  xv.shape = xs->second;
  xv.data = x.data();
  FakeRun run;
  run.inputs.assign(6, nullptr);
  run.inputs[0] = &xv;
  OrtValue bv;
  std::vector<float> b;
  if (with_bias) {
    const auto bs = layer.ints.find("bias_shape");
    if (bs != layer.ints.end()) {
      const size_t nb = bounded_count(bs->second);
      if (nb == 0 && !bs->second.empty()) return;
      b = make_x(nb, false);
      bv.shape = bs->second;
      bv.data = b.data();
      run.inputs.push_back(&bv);
    }
  }
  try {
    kernel->compute(dc_onnx_fuzz::kernel_context(&run));
  } catch (const dc_onnx::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dc_onnx_fuzz::install_fake_ort();
  dc_onnx_fuzz::FuzzLayer layer;
  if (!dc_onnx_fuzz::parse_fuzz_input(data, size, &layer)) return 0;
  FakeNode node;
  for (const auto& [name, values] : layer.ints) {
    if (name == "alpha" || name == "beta") {
      if (values.size() != 1) continue;
      const auto bits = static_cast<uint32_t>(values[0]);
      float f;
      std::memcpy(&f, &bits, sizeof f);
      node.floats[name] = f;
    } else if (name == "auto_pad") {
      if (values.size() != 1) continue;
      node.strings[name] = dc_onnx_fuzz::kAutoPads[static_cast<uint64_t>(values[0]) % 5];
    } else if (name != "x_shape" && name != "bias_shape") {
      node.ints[name] = values;
    }
  }
  node.strings["layer"] = "fuzz";
  // Format version 3 nodes give X and the whole side file only (the fake names every
  // input it serves, so no bias after the empty stream slots).
  const bool with_bias = (data[0] & 8) != 0 && !layer.whole_file;
  const bool non_finite = (data[0] & 16) != 0;
  node.constants.resize(layer.whole_file ? 2 : with_bias ? 7 : 6);
  node.is_constant.assign(node.constants.size(), true);
  node.is_constant[0] = false;
  if (with_bias) node.is_constant[6] = false;
  node.constants[1] = tensor(ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, layer.header, 1);
  if (!layer.whole_file) {
    node.constants[2] = tensor(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, layer.streams[0], 4);
    for (size_t k = 1; k < 4; ++k)
      node.constants[2 + k] = tensor(ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, layer.streams[k], 1);
  }
  switch (layer.op) {
    case 0: create_and_run<dc_onnx::GemmKernel>(&node, layer, with_bias, non_finite); break;
    case 1: create_and_run<dc_onnx::MatMulKernel>(&node, layer, with_bias, non_finite); break;
    default: create_and_run<dc_onnx::ConvKernel>(&node, layer, with_bias, non_finite); break;
  }
  return 0;
}
