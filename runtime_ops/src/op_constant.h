// CompressedConstant: the storage form of a weight (docs/format.md). Decodes the weight
// once at kernel creation into a dense tensor of its original dtype (float32, float16,
// bfloat16, int8, uint8) and copies it to the output on every Run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "custom_op.h"
#include "ort_api.h"

namespace dc_onnx {

class ConstantKernel {
 public:
  explicit ConstantKernel(const OrtKernelInfo* info);
  void compute(OrtKernelContext* context) const;

 private:
  std::string prefix_;
  std::vector<int64_t> shape_;
  std::vector<uint8_t> dense_;  // the decoded weight, in its own dtype, row-major
};

// Inputs: header, codebook (any supported dtype: it sets the output's), codes, gaps,
// code_lengths. ORT types an UNDEFINED output like the one UNDEFINED input.
template <>
struct OpTypes<ConstantKernel> {
  static ONNXTensorElementDataType input(size_t index) {
    if (index == 5) return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;  // row_scales
    return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
                      : ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  }
  static ONNXTensorElementDataType output(size_t) {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
};

// Format version 3 gives the node no codebook input to type its output by: the output is
// typed by the `dtype` attribute (float32 when absent) and shaped by `weight_shape`.
// Versions 1-2 keep ORT's own typing from the codebook input.
OrtStatusPtr ORT_API_CALL infer_constant_output(const OrtCustomOp* op,
                                                OrtShapeInferContext* ctx) noexcept;

template <>
struct OpInference<ConstantKernel> {
  static constexpr OrtStatusPtr(ORT_API_CALL* infer)(const OrtCustomOp*,
                                                     OrtShapeInferContext*) =
      infer_constant_output;
};

}  // namespace dc_onnx
