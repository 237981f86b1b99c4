// CompressedGather: ONNX Gather (axis 0) on a constant table stored compressed, for
// embeddings. The table stays resident in a compact coded form; each Run expands only
// the rows it gathers, so its cost scales with the indices, not with the table.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "custom_op.h"
#include "ort_api.h"

namespace dc_onnx {

class GatherKernel {
 public:
  explicit GatherKernel(const OrtKernelInfo* info);
  void compute(OrtKernelContext* context) const;

 private:
  // Writes table row `row` (already in 0..rows_-1) to `out` (width_ floats).
  void expand_row(int64_t row, float* out) const;
  // The row's codebook values, before its row scale.
  void expand_codes_of(size_t r, float* out) const;

  std::string prefix_;
  int64_t rows_ = 0;             // vocabulary size: weight_shape[0]
  int64_t width_ = 0;            // floats per row: product of weight_shape[1:]
  std::vector<int64_t> row_shape_;  // weight_shape[1:], appended to the indices' shape
  // Resident form, whichever is smaller: a dense code matrix [rows_, width_] (1 byte per
  // weight), or CSR rows with a 1-byte code and a 2- or 4-byte column per non-zero.
  bool dense_ = false;
  std::vector<uint8_t> codes_;   // dense: rows_ * width_ codes; CSR: one per non-zero
  std::vector<size_t> row_ptr_;  // CSR: rows_ + 1 offsets into codes_ and the columns
  std::vector<uint16_t> col16_;  // CSR, width_ <= 65536
  std::vector<uint32_t> col32_;  // CSR, wider rows
  std::array<float, 256> codebook_{};
  std::vector<float> row_scale_;  // empty, or one per table row: multiplies the row
};

// Input 0 takes indices of any type (the kernel accepts int32 and int64); output float32.
template <>
struct OpTypes<GatherKernel> {
  static ONNXTensorElementDataType input(size_t index) {
    return index == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED : compressed_input_type(index);
  }
  static ONNXTensorElementDataType output(size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace dc_onnx
