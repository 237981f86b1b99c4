// CompressedConstant (op_constant.h). Custom-domain ops are never constant-folded by
// ORT, so the decoded tensor is copied to the output on every Run: a memcpy is the floor
// for any custom op whose output is a whole weight (docs/format.md).
#include "op_constant.h"

#include <cstring>
#include <string>

#include "kernel_info.h"
#include "side_file.h"
#include "sparse_weight.h"

namespace dc_onnx {
namespace {

// The raw bytes of constant input `index`, with its element type and count.
struct RawConstant {
  const uint8_t* bytes = nullptr;
  size_t nbytes = 0;
  size_t count = 0;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
};

size_t element_size(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return 4;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return 2;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return 1;
    default: return 0;  // no storage form for this dtype
  }
}

RawConstant raw_constant(const OrtKernelInfo* info, size_t index, const char* what) {
  const std::string name = std::string("input ") + std::to_string(index) + " (" + what + ")";
  int is_constant = 0;
  const OrtValue* value = nullptr;
  OrtStatus* status =
      Ort::GetApi().KernelInfoGetConstantInput_tensor(info, index, &is_constant, &value);
  if (status != nullptr) {
    Ort::GetApi().ReleaseStatus(status);
    fail(name + " must be a constant initializer (the weight is decoded at session creation)");
  }
  if (!is_constant || value == nullptr)
    fail(name + " must be a constant initializer (the weight is decoded at session creation)");
  Ort::ConstValue v{value};
  if (!v.IsTensor()) fail(name + " is not a tensor");
  const auto ti = v.GetTensorTypeAndShapeInfo();
  if (ti.GetDimensionsCount() != 1) fail(name + " must be 1-D");
  RawConstant c;
  c.type = ti.GetElementType();
  c.count = ti.GetElementCount();
  const size_t size = element_size(c.type);
  if (size == 0) fail(name + " has an element type without a storage form");
  c.nbytes = c.count * size;
  c.bytes = c.count == 0 ? nullptr : static_cast<const uint8_t*>(v.GetTensorRawData());
  return c;
}

RawConstant byte_constant(const OrtKernelInfo* info, size_t index, const char* what) {
  RawConstant c = raw_constant(info, index, what);
  if (c.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8)
    fail(std::string("input ") + std::to_string(index) + " (" + what + ") must be uint8");
  return c;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits = 0;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa != 0) {  // subnormal: normalize
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  } else {
    bits = sign;
  }
  float f = 0;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// The codebook as float32 (exact for every supported dtype), for the shared decoder,
// which checks codebook[0] == 0 and drops entries whose value is zero.
std::vector<float> codebook_as_float(const RawConstant& c) {
  std::vector<float> out(c.count);
  for (size_t i = 0; i < c.count; ++i) {
    const uint8_t* p = c.bytes + i * element_size(c.type);
    switch (c.type) {
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: std::memcpy(&out[i], p, 4); break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: {
        uint16_t h = 0;
        std::memcpy(&h, p, 2);
        out[i] = half_to_float(h);
        break;
      }
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: {
        uint16_t h = 0;
        std::memcpy(&h, p, 2);
        const uint32_t bits = uint32_t{h} << 16;
        std::memcpy(&out[i], &bits, 4);
        break;
      }
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: out[i] = static_cast<float>(static_cast<int8_t>(*p)); break;
      default: out[i] = static_cast<float>(*p); break;
    }
  }
  return out;
}

}  // namespace

ConstantKernel::ConstantKernel(const OrtKernelInfo* info) : prefix_(layer_prefix(info)) {
  with_layer(prefix_, [&] {
    shape_ = required_ints(info, "weight_shape");
    const int64_t num_entries = required_int(info, "num_entries");
    const int64_t index_bits = required_int(info, "index_bits");
    const std::vector<int64_t> ids = required_ints(info, "stream_ids");
    if (num_entries < 0) fail("num_entries is negative");
    if (index_bits < 1 || index_bits > 8)
      fail("index_bits " + std::to_string(index_bits) + " out of range 1..8");
    if (ids.size() != 4) fail("stream_ids must hold 4 TOC indices");
    uint64_t size = 1;
    for (int64_t d : shape_) {
      if (d < 1 || d > INT32_MAX) fail("weight_shape " + shape_str(shape_) + " has an invalid dim");
      size *= static_cast<uint64_t>(d);
      if (size > (uint64_t{1} << 40)) fail("weight_shape " + shape_str(shape_) + " is too large");
    }
    // The stored matrix: the first dim by the rest (rank < 2: one row), as the encoder.
    const int64_t rows = shape_.size() >= 2 ? shape_[0] : 1;
    const int64_t cols = static_cast<int64_t>(size) / rows;

    const RawConstant header = byte_constant(info, 0, "header");
    const RawConstant codebook = raw_constant(info, 1, "codebook");
    const RawConstant codes = byte_constant(info, 2, "codes");
    const RawConstant gaps = byte_constant(info, 3, "gaps");
    const RawConstant lengths = byte_constant(info, 4, "code_lengths");
    type_ = codebook.type;

    const std::vector<TocEntry> toc = parse_header(header.bytes, header.nbytes);
    const auto m = static_cast<uint64_t>(num_entries);
    check_stream(toc, ids[0], StreamKind::kCodebook, codebook.bytes, codebook.nbytes,
                 codebook.count);
    const uint64_t num_codes = check_stream(toc, ids[1], StreamKind::kCodes, codes.bytes,
                                            codes.nbytes, kCountCheckedLater);
    check_stream(toc, ids[2], StreamKind::kGaps, gaps.bytes, gaps.nbytes, m);
    check_stream(toc, ids[3], StreamKind::kCodeLengths, lengths.bytes, lengths.nbytes,
                 lengths.count);
    if (codebook.count < 1 || codebook.count > 256)
      fail("codebook has " + std::to_string(codebook.count) + " entries (must be 1..256)");

    const std::vector<float> cb = codebook_as_float(codebook);
    EncodedWeight w{};
    w.codebook = cb.data();
    w.k = cb.size();
    w.codes = codes.bytes;
    w.codes_bytes = codes.nbytes;
    w.gaps = gaps.bytes;
    w.gaps_bytes = gaps.nbytes;
    w.code_lengths = lengths.bytes;
    w.code_lengths_count = lengths.count;
    w.num_entries = m;
    w.num_codes = num_codes;
    w.index_bits = static_cast<unsigned>(index_bits);
    const CsrMatrix csr = decode_weight(w, rows, cols);

    // Scatter the codebook entries, in the weight's own dtype, into a zeroed buffer.
    const size_t es = element_size(type_);
    dense_.assign(static_cast<size_t>(size) * es, 0);
    for (size_t r = 0; r < static_cast<size_t>(rows); ++r) {
      const size_t row_base = r * static_cast<size_t>(cols);
      for (size_t e = csr.row_ptr[r]; e < csr.row_ptr[r + 1]; ++e)
        std::memcpy(dense_.data() + (row_base + csr.col[e]) * es,
                    codebook.bytes + size_t{csr.code[e]} * es, es);
    }
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
