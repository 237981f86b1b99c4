// ORT-facing helpers shared by the kernels: node attributes, the layer prefix of every
// message, the conversion of any exception into dc_onnx::Error, and run-time tensors.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "decode_error.h"
#include "errors.h"
#include "ort_api.h"

namespace dc_onnx {

// True when `status` is OK; releases it otherwise (optional attributes, queries that
// may fail without being an error).
bool ok(OrtStatus* status);

// Optional attributes: std::nullopt when the node does not carry them.
std::optional<int64_t> attr_int(const OrtKernelInfo* info, const char* name);
std::optional<float> attr_float(const OrtKernelInfo* info, const char* name);
std::optional<std::string> attr_string(const OrtKernelInfo* info, const char* name);
std::optional<std::vector<int64_t>> attr_ints(const OrtKernelInfo* info, const char* name);

// Required attributes: throw dc_onnx::Error naming the attribute when missing.
int64_t required_int(const OrtKernelInfo* info, const char* name);
std::vector<int64_t> required_ints(const OrtKernelInfo* info, const char* name);

// The layer's name: its `layer` attribute, else the node's name ("?" when neither).
std::string layer_name(const OrtKernelInfo* info);

// "dc_onnx: layer '<layer_name>': ", the prefix of every message.
std::string layer_prefix(const OrtKernelInfo* info);

// Runs `body`, rethrowing any exception as dc_onnx::Error whose message starts with
// `prefix`, so every failure names its layer.
template <typename F>
void with_layer(const std::string& prefix, F&& body) {
  try {
    body();
  } catch (const Error& e) {
    throw Error(prefix + e.what(), e.code());
  } catch (const DecodeError& e) {
    throw Error(prefix + e.what(), ORT_INVALID_GRAPH);
  } catch (const Ort::Exception& e) {
    throw Error(prefix + e.what(), e.GetOrtErrorCode());
  } catch (const std::bad_alloc&) {
    throw Error(prefix + "out of memory", ORT_FAIL);
  } catch (const std::exception& e) {
    throw Error(prefix + e.what(), ORT_FAIL);
  }
}

// Checks a weight_shape attribute: `rank` dims (any of `ranks`), each in 1..2^31-1.
void check_weight_shape(const std::vector<int64_t>& shape, std::initializer_list<size_t> ranks);

// Whether the node gives input `index` (an optional input may be absent or empty).
bool has_input(const OrtKernelInfo* info, size_t index);

// A 1-D constant initializer input, read at kernel creation: raw bytes, element count
// and type. Throws dc_onnx::Error naming `name` when the input is not one.
struct ConstantTensor {
  const uint8_t* data = nullptr;
  size_t count = 0;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
};
ConstantTensor constant_tensor(const OrtKernelInfo* info, size_t index, const std::string& name);

// Run-time view of an input tensor.
struct InputTensor {
  const float* data = nullptr;
  std::vector<int64_t> shape;
  size_t count = 0;
};
InputTensor float_input(const Ort::KernelContext& ctx, size_t index);
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace dc_onnx
