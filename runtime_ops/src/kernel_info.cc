#include "kernel_info.h"

#include <array>
#include <cstdio>
#include <cstdlib>

#include "side_file.h"

namespace dc_onnx {
namespace {

const OrtApi& api() { return Ort::GetApi(); }

// True when `status` is OK; releases it otherwise (used for optional attributes).
bool ok(OrtStatus* status) {
  if (status == nullptr) return true;
  api().ReleaseStatus(status);
  return false;
}

const char* const kInputNames[] = {"X", "header", "codebook", "codes", "gaps", "code_lengths"};

// A constant input of the expected element type, as raw bytes plus element count.
struct ConstInput {
  const uint8_t* bytes = nullptr;
  size_t nbytes = 0;
  size_t count = 0;
  size_t rank = 0;
};

ConstInput constant_input(const OrtKernelInfo* info, size_t index,
                          ONNXTensorElementDataType type, size_t elem_size) {
  const std::string name = std::string("input ") + std::to_string(index) + " (" +
                           kInputNames[index] + ")";
  int is_constant = 0;
  const OrtValue* value = nullptr;
  if (!ok(api().KernelInfoGetConstantInput_tensor(info, index, &is_constant, &value)) ||
      !is_constant || value == nullptr)
    fail(name + " must be a constant initializer (the weight is decoded at session creation)");
  Ort::ConstValue v{value};
  if (!v.IsTensor()) fail(name + " is not a tensor");
  const auto ti = v.GetTensorTypeAndShapeInfo();
  if (ti.GetElementType() != type) fail(name + " has the wrong element type");
  ConstInput in;
  in.count = ti.GetElementCount();
  in.rank = ti.GetDimensionsCount();
  in.nbytes = in.count * elem_size;
  in.bytes = in.count == 0 ? nullptr : static_cast<const uint8_t*>(v.GetTensorRawData());
  if (in.rank != 1) fail(name + " must be 1-D");
  return in;
}

}  // namespace

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
  return "dc_onnx: layer '" + (layer.empty() ? std::string("?") : layer) + "': ";
}

void check_weight_shape(const std::vector<int64_t>& shape, std::initializer_list<size_t> ranks) {
  bool rank_ok = false;
  for (size_t r : ranks) rank_ok = rank_ok || shape.size() == r;
  if (!rank_ok) fail("weight_shape " + shape_str(shape) + " has the wrong rank for this op");
  for (int64_t d : shape)
    if (d < 1 || d > INT32_MAX) fail("weight_shape " + shape_str(shape) + " has an invalid dim");
}

CsrMatrix load_compressed_weight(const OrtKernelInfo* info, int64_t rows, int64_t cols) {
  size_t num_inputs = 0;
  if (!ok(api().KernelInfo_GetInputCount(info, &num_inputs)) || num_inputs < 6)
    fail("the node needs at least 6 inputs (X, header, codebook, codes, gaps, code_lengths)");
  const int64_t num_entries = required_int(info, "num_entries");
  const int64_t index_bits = required_int(info, "index_bits");
  const std::vector<int64_t> ids = required_ints(info, "stream_ids");
  if (num_entries < 0) fail("num_entries is negative");
  if (index_bits < 1 || index_bits > 8)
    fail("index_bits " + std::to_string(index_bits) + " out of range 1..8");
  if (ids.size() != 4) fail("stream_ids must hold 4 TOC indices");

  const ConstInput header = constant_input(info, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1);
  const ConstInput codebook = constant_input(info, 2, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4);
  const ConstInput codes = constant_input(info, 3, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1);
  const ConstInput gaps = constant_input(info, 4, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1);
  const ConstInput lengths = constant_input(info, 5, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1);

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
  // The codebook tensor is ORT-allocated float data, hence suitably aligned.
  EncodedWeight w{};
  w.codebook = reinterpret_cast<const float*>(codebook.bytes);
  w.k = codebook.count;
  w.codes = codes.bytes;
  w.codes_bytes = codes.nbytes;
  w.gaps = gaps.bytes;
  w.gaps_bytes = gaps.nbytes;
  w.code_lengths = lengths.bytes;
  w.code_lengths_count = lengths.count;
  w.num_entries = m;
  w.num_codes = num_codes;
  w.index_bits = static_cast<unsigned>(index_bits);
  CsrMatrix csr = decode_weight(w, rows, cols);
  // Opt-in throughput log, read back by `dc-onnx bench` (one line per layer).
  if (const char* env = std::getenv("DC_ONNX_DECODE_STATS"); env != nullptr && *env != '\0') {
    const std::string layer = attr_string(info, "layer").value_or("?");
    std::fprintf(stderr, "dc_onnx: layer '%s': decoded %llu symbols in %llu ns\n", layer.c_str(),
                 static_cast<unsigned long long>(csr.symbols),
                 static_cast<unsigned long long>(csr.decode_ns));
  }
  return csr;
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

}  // namespace dc_onnx
