// CompressedConstant (op_constant.h). Custom-domain ops are never constant-folded by
// ORT, so the decoded tensor is copied to the output on every Run: a memcpy is the floor
// for any custom op whose output is a whole weight (docs/format.md).
#include "op_constant.h"

#include <cstring>
#include <string>

#include "decode_stats.h"
#include "decoder.h"
#include "kernel_info.h"

namespace dc_onnx {
namespace {

const char* const kInputNames[] = {"header", "codebook", "codes", "gaps", "code_lengths"};

// The raw bytes of constant input `index` (1-D), and its element type.
Bytes constant_bytes(const OrtKernelInfo* info, size_t index,
                     ONNXTensorElementDataType* type) {
  const std::string name = std::string("input ") + std::to_string(index) + " (" +
                           kInputNames[index] + ")";
  int is_constant = 0;
  const OrtValue* value = nullptr;
  if (!ok(Ort::GetApi().KernelInfoGetConstantInput_tensor(info, index, &is_constant, &value)) ||
      !is_constant || value == nullptr)
    fail(name + " must be a constant initializer (the weight is decoded at session creation)");
  Ort::ConstValue v{value};
  if (!v.IsTensor()) fail(name + " is not a tensor");
  const auto ti = v.GetTensorTypeAndShapeInfo();
  if (ti.GetDimensionsCount() != 1) fail(name + " must be 1-D");
  *type = ti.GetElementType();
  Bytes b;
  b.size = ti.GetElementCount();
  b.data = b.size == 0 ? nullptr : static_cast<const uint8_t*>(v.GetTensorRawData());
  return b;
}

Bytes byte_input(const OrtKernelInfo* info, size_t index) {
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  const Bytes b = constant_bytes(info, index, &type);
  if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8)
    fail(std::string("input ") + std::to_string(index) + " (" + kInputNames[index] +
         ") must be uint8");
  return b;
}

CodebookType codebook_type(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return CodebookType::kFloat32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return CodebookType::kFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return CodebookType::kBFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return CodebookType::kInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return CodebookType::kUInt8;
    default:
      fail("input 1 (codebook) must be float32, float16, bfloat16, int8 or uint8");
  }
}

}  // namespace

ConstantKernel::ConstantKernel(const OrtKernelInfo* info) : prefix_(layer_prefix(info)) {
  with_layer(prefix_, [&] {
    shape_ = required_ints(info, "weight_shape");
    uint64_t size = 1;
    for (int64_t d : shape_) {
      if (d < 1 || d > INT32_MAX) fail("weight_shape " + shape_str(shape_) + " has an invalid dim");
      size *= static_cast<uint64_t>(d);
      if (size > (uint64_t{1} << 40)) fail("weight_shape " + shape_str(shape_) + " is too large");
    }
    // The stored matrix: the first dim by the rest (rank < 2: one row), as the encoder.
    LayerAttributes attrs;
    attrs.rows = shape_.size() >= 2 ? shape_[0] : 1;
    attrs.cols = static_cast<int64_t>(size) / attrs.rows;
    attrs.num_entries = required_int(info, "num_entries");
    attrs.index_bits = required_int(info, "index_bits");
    attrs.stream_ids = required_ints(info, "stream_ids");

    LayerStreams streams;
    ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    streams.header = byte_input(info, 0);
    const Bytes codebook = constant_bytes(info, 1, &type);
    streams.codebook_type = codebook_type(type);
    const size_t es = codebook_element_size(streams.codebook_type);
    streams.codebook = Bytes{codebook.data, codebook.size * es};
    streams.codes = byte_input(info, 2);
    streams.gaps = byte_input(info, 3);
    streams.code_lengths = byte_input(info, 4);
    const CsrMatrix csr = decode_layer(streams, attrs);
    report_decode_stats(attr_string(info, "layer").value_or("?"), csr);

    // Scatter the codebook entries, in the weight's own dtype, into a zeroed buffer.
    dense_.assign(static_cast<size_t>(size) * es, 0);
    const auto cols = static_cast<size_t>(attrs.cols);
    for (size_t r = 0; r < static_cast<size_t>(attrs.rows); ++r)
      for (size_t e = csr.row_ptr[r]; e < csr.row_ptr[r + 1]; ++e)
        std::memcpy(dense_.data() + (r * cols + csr.col[e]) * es,
                    streams.codebook.data + size_t{csr.code[e]} * es, es);
  });
}

void ConstantKernel::compute(OrtKernelContext* context) const {
  with_layer(prefix_, [&] {
    Ort::KernelContext ctx(context);
    Ort::UnownedValue out = ctx.GetOutput(0, shape_);
    if (!dense_.empty()) std::memcpy(out.GetTensorMutableRawData(), dense_.data(), dense_.size());
  });
}

}  // namespace dc_onnx
