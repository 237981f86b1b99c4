// CompressedGather: ONNX Gather (axis 0) on a constant table stored compressed, for
// embeddings. The table stays resident in a compact coded form; each Run expands only
// the rows it gathers, so its cost scales with the indices, not with the table.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "custom_op.h"
#include "ort_api.h"

namespace dc_onnx {

// A table as the kernel keeps it, whichever is smaller: a dense code matrix [rows,
// width] (1 byte per weight), or CSR rows with a 1-byte code and a 2- or 4-byte column
// per non-zero.
struct CodedTable {
  int64_t width = 0;             // floats per row
  bool dense = false;
  std::vector<uint8_t> codes;    // dense: rows * width codes; CSR: one per non-zero
  std::vector<size_t> row_ptr;   // CSR: rows + 1 offsets into codes and the columns
  std::vector<uint16_t> col16;   // CSR, width <= 65536
  std::vector<uint32_t> col32;   // CSR, wider rows
  std::array<float, 256> codebook{};
  std::vector<float> row_scale;  // empty, or one per table row: multiplies the row

  // Writes row `r` (already in range) to `out` (width floats).
  void expand_row(size_t r, float* out) const;

 private:
  // The row's codebook values, before its row scale.
  void expand_codes_of(size_t r, float* out) const;
};

class GatherKernel {
 public:
  explicit GatherKernel(const OrtKernelInfo* info);
  void compute(OrtKernelContext* context) const;

 private:
  std::string prefix_;
  int64_t rows_ = 0;             // vocabulary size: weight_shape[0]
  int64_t width_ = 0;            // floats per row: product of weight_shape[1:]
  std::vector<int64_t> row_shape_;  // weight_shape[1:], appended to the indices' shape
  std::shared_ptr<const CodedTable> table_;  // shared by the nodes that read the table
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
