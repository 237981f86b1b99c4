// CompressedConstant (op_constant.h). Custom-domain ops are never constant-folded by
// ORT, so the decoded tensor is copied to the output on every Run: a memcpy is the floor
// for any custom op whose output is a whole weight (docs/format.md).
#include "op_constant.h"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "decode_stats.h"
#include "decoder.h"
#include "kernel_info.h"
#include "side_file.h"

namespace dc_onnx {
namespace {

const char* const kInputNames[] = {"header", "codebook",     "codes",
                                   "gaps",   "code_lengths", "row_scales"};

std::string input_name(size_t index) {
  return std::string("input ") + std::to_string(index) + " (" + kInputNames[index] + ")";
}

Bytes byte_input(const OrtKernelInfo* info, size_t index) {
  const ConstantTensor t = constant_tensor(info, index, input_name(index));
  if (t.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8) fail(input_name(index) + " must be uint8");
  return Bytes{t.data, t.count};
}

CodebookType codebook_type(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return CodebookType::kFloat32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return CodebookType::kFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return CodebookType::kBFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return CodebookType::kInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return CodebookType::kUInt8;
    default:
      fail("the codebook (input 1, or the dtype attribute) must be float32, float16, bfloat16, "
           "int8 or uint8");
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

    LayerStreams given;
    given.header = byte_input(info, 0);
    if (peek_format_version(given.header.data, given.header.size) >= kWholeFileVersion) {
      // The streams are slices of the side file; the codebook's dtype is an attribute.
      for (size_t i = 1; i < 6; ++i)
        if (has_input(info, i))
          fail(input_name(i) + " must be empty: format version 3 reads the streams from the " +
               "side file");
      given.codebook_type = codebook_type(static_cast<ONNXTensorElementDataType>(
          attr_int(info, "dtype").value_or(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)));
    } else {
      const ConstantTensor codebook = constant_tensor(info, 1, input_name(1));
      given.codebook_type = codebook_type(codebook.type);
      given.codebook = Bytes{codebook.data, codebook.count * codebook_element_size(given.codebook_type)};
      given.codes = byte_input(info, 2);
      given.gaps = byte_input(info, 3);
      given.code_lengths = byte_input(info, 4);
      if (attrs.stream_ids.size() == 5) {
        const ConstantTensor scales = constant_tensor(info, 5, input_name(5));
        if (scales.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
          fail(input_name(5) + " must be float32");
        given.row_scales = Bytes{scales.data, scales.count * 4};
      }
    }
    const LayerStreams streams = resolve_streams(given, attrs.stream_ids);
    const size_t es = codebook_element_size(streams.codebook_type);
    const CsrMatrix csr = decode_layer(streams, attrs);
    report_decode_stats(layer_name(info), csr);

    // Scatter the codebook entries, in the weight's own dtype, into a zeroed buffer.
    dense_.assign(static_cast<size_t>(size) * es, 0);
    const auto cols = static_cast<size_t>(attrs.cols);
    for (size_t r = 0; r < static_cast<size_t>(attrs.rows); ++r)
      for (size_t e = csr.row_ptr[r]; e < csr.row_ptr[r + 1]; ++e) {
        uint8_t* dst = dense_.data() + (r * cols + csr.col[e]) * es;
        if (csr.row_scale.empty()) {
          std::memcpy(dst, streams.codebook.data + size_t{csr.code[e]} * es, es);
        } else {  // float32 only (the decoder checks): the product, rounded once
          const float v = csr.row_scale[r] * csr.codebook[csr.code[e]];
          std::memcpy(dst, &v, sizeof v);
        }
      }
  });
}

namespace {

// An ints attribute during shape inference (empty when the node lacks it).
std::vector<int64_t> inferred_ints(const OrtApi& api, OrtShapeInferContext* ctx, const char* name) {
  const OrtOpAttr* attr = nullptr;
  if (!ok(api.ShapeInferContext_GetAttribute(ctx, name, &attr)) || attr == nullptr) return {};
  size_t bytes = 0;  // a first call with no room gives the size needed
  (void)ok(api.ReadOpAttr(attr, ORT_OP_ATTR_INTS, nullptr, 0, &bytes));
  std::vector<int64_t> v(bytes / sizeof(int64_t));
  if (!v.empty()) Ort::ThrowOnError(api.ReadOpAttr(attr, ORT_OP_ATTR_INTS, v.data(), bytes, &bytes));
  return v;
}

}  // namespace

OrtStatusPtr ORT_API_CALL infer_constant_output(const OrtCustomOp*,
                                                OrtShapeInferContext* ctx) noexcept {
  return guarded([&] {
    const OrtApi& api = Ort::GetApi();
    size_t inputs = 0;
    Ort::ThrowOnError(api.ShapeInferContext_GetInputCount(ctx, &inputs));
    if (inputs > 1) return;  // versions 1-2: the codebook input typed the output
    int64_t dtype = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    const OrtOpAttr* attr = nullptr;
    if (ok(api.ShapeInferContext_GetAttribute(ctx, "dtype", &attr)) && attr != nullptr) {
      size_t got = 0;
      Ort::ThrowOnError(api.ReadOpAttr(attr, ORT_OP_ATTR_INT, &dtype, sizeof dtype, &got));
    }
    const std::vector<int64_t> shape = inferred_ints(api, ctx, "weight_shape");
    OrtTensorTypeAndShapeInfo* raw = nullptr;
    Ort::ThrowOnError(api.CreateTensorTypeAndShapeInfo(&raw));
    const std::unique_ptr<OrtTensorTypeAndShapeInfo, void (*)(OrtTensorTypeAndShapeInfo*)> info(
        raw, [](OrtTensorTypeAndShapeInfo* p) { Ort::GetApi().ReleaseTensorTypeAndShapeInfo(p); });
    Ort::ThrowOnError(
        api.SetTensorElementType(info.get(), static_cast<ONNXTensorElementDataType>(dtype)));
    Ort::ThrowOnError(api.SetDimensions(info.get(), shape.data(), shape.size()));
    // ORT reads a symbolic name per dim beside the integer dims: none here.
    std::vector<const char*> symbolic(shape.size(), "");
    Ort::ThrowOnError(api.SetSymbolicDimensions(info.get(), symbolic.data(), symbolic.size()));
    Ort::ThrowOnError(api.ShapeInferContext_SetOutputTypeShape(ctx, 0, info.get()));
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
