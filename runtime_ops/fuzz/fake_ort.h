// A stand-in for the slice of ONNX Runtime's C API that the kernels call while they are
// created and run (attributes, constant inputs, statuses, tensors, ParallelFor, CreateOp/
// InvokeOp), so a fuzz target can drive the real op classes without linking ORT. Attribute
// and input values come from a FakeNode the target fills in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ort_api.h"

// ORT declares these opaque; the fake gives them a body.
struct OrtValue {
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  std::vector<int64_t> shape;
  void* data = nullptr;         // not owned unless `storage` holds it
  std::vector<float> storage;  // outputs allocated by KernelContext_GetOutput
};

namespace dc_onnx_fuzz {

struct FakeNode {
  std::map<std::string, std::vector<int64_t>> ints;  // int and ints attributes
  std::map<std::string, float> floats;
  std::map<std::string, std::string> strings;
  std::vector<OrtValue> constants;  // inputs 0..: constant when `is_constant[i]`
  std::vector<bool> is_constant;
};

// Run-time inputs and outputs of one compute call.
struct FakeRun {
  std::vector<const OrtValue*> inputs;
  std::vector<OrtValue> outputs;
  size_t max_output_elements = size_t{1} << 22;  // larger outputs fail like an OOM would
};

// Installs the fake API table as Ort::GetApi() (idempotent).
void install_fake_ort();

OrtKernelInfo* kernel_info(FakeNode* node);
OrtKernelContext* kernel_context(FakeRun* run);

}  // namespace dc_onnx_fuzz
