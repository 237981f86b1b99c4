#include "kernel_info.h"

namespace dc_onnx {
namespace {

const OrtApi& api() { return Ort::GetApi(); }

}  // namespace

bool ok(OrtStatus* status) {
  if (status == nullptr) return true;
  api().ReleaseStatus(status);
  return false;
}

std::optional<int64_t> attr_int(const OrtKernelInfo* info, const char* name) {
  int64_t v = 0;
  if (!ok(api().KernelInfoGetAttribute_int64(info, name, &v))) return std::nullopt;
  return v;
}

std::optional<float> attr_float(const OrtKernelInfo* info, const char* name) {
  float v = 0;
  if (!ok(api().KernelInfoGetAttribute_float(info, name, &v))) return std::nullopt;
  return v;
}

std::optional<std::string> attr_string(const OrtKernelInfo* info, const char* name) {
  size_t size = 0;
  if (!ok(api().KernelInfoGetAttribute_string(info, name, nullptr, &size))) return std::nullopt;
  std::string s(size, '\0');
  if (!ok(api().KernelInfoGetAttribute_string(info, name, s.data(), &size))) return std::nullopt;
  s.resize(size > 0 ? size - 1 : 0);  // ORT counts the terminating NUL
  return s;
}

std::optional<std::vector<int64_t>> attr_ints(const OrtKernelInfo* info, const char* name) {
  size_t size = 0;
  if (!ok(api().KernelInfoGetAttributeArray_int64(info, name, nullptr, &size)))
    return std::nullopt;
  std::vector<int64_t> v(size);
  if (size > 0 && !ok(api().KernelInfoGetAttributeArray_int64(info, name, v.data(), &size)))
    return std::nullopt;
  return v;
}

int64_t required_int(const OrtKernelInfo* info, const char* name) {
  auto v = attr_int(info, name);
  if (!v) fail(std::string("missing int attribute '") + name + "'");
  return *v;
}

std::vector<int64_t> required_ints(const OrtKernelInfo* info, const char* name) {
  auto v = attr_ints(info, name);
  if (!v) fail(std::string("missing ints attribute '") + name + "'");
  return *v;
}

std::string layer_prefix(const OrtKernelInfo* info) {
  return "dc_onnx: layer '" + layer_name(info) + "': ";
}

std::string layer_name(const OrtKernelInfo* info) {
  std::string layer = attr_string(info, "layer").value_or("");
  if (layer.empty()) {
    size_t size = 0;
    if (ok(api().KernelInfo_GetNodeName(info, nullptr, &size)) && size > 1) {
      layer.assign(size, '\0');
      if (ok(api().KernelInfo_GetNodeName(info, layer.data(), &size)))
        layer.resize(size - 1);
      else
        layer.clear();
    }
  }
  return layer.empty() ? std::string("?") : layer;
}

void check_weight_shape(const std::vector<int64_t>& shape, std::initializer_list<size_t> ranks) {
  bool rank_ok = false;
  for (size_t r : ranks) rank_ok = rank_ok || shape.size() == r;
  if (!rank_ok) fail("weight_shape " + shape_str(shape) + " has the wrong rank for this op");
  for (int64_t d : shape)
    if (d < 1 || d > INT32_MAX) fail("weight_shape " + shape_str(shape) + " has an invalid dim");
}

InputTensor float_input(const Ort::KernelContext& ctx, size_t index) {
  InputTensor t;
  Ort::ConstValue v = ctx.GetInput(index);
  const auto ti = v.GetTensorTypeAndShapeInfo();
  t.shape = ti.GetShape();
  t.count = ti.GetElementCount();
  t.data = t.count == 0 ? nullptr : v.GetTensorData<float>();
  return t;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

ConstantTensor constant_tensor(const OrtKernelInfo* info, size_t index, const std::string& name) {
  int is_constant = 0;
  const OrtValue* value = nullptr;
  if (!ok(Ort::GetApi().KernelInfoGetConstantInput_tensor(info, index, &is_constant, &value)) ||
      !is_constant || value == nullptr)
    fail(name + " must be a constant initializer (the weight is decoded at session creation)");
  Ort::ConstValue v{value};
  if (!v.IsTensor()) fail(name + " is not a tensor");
  const auto ti = v.GetTensorTypeAndShapeInfo();
  if (ti.GetDimensionsCount() != 1) fail(name + " must be 1-D");
  ConstantTensor t;
  t.type = ti.GetElementType();
  t.count = ti.GetElementCount();
  t.data = t.count == 0 ? nullptr : static_cast<const uint8_t*>(v.GetTensorRawData());
  return t;
}

bool has_input(const OrtKernelInfo* info, size_t index) {
  size_t count = 0;
  if (!ok(Ort::GetApi().KernelInfo_GetInputCount(info, &count)) || index >= count) return false;
  size_t size = 0;  // the name's length plus its terminating zero
  if (!ok(Ort::GetApi().KernelInfo_GetInputName(info, index, nullptr, &size))) return false;
  return size > 1;
}

}  // namespace dc_onnx
