// The fake ORT API of fake_ort.h. Only the functions the kernels call are set; any other
// entry stays null, so a kernel calling something new crashes the fuzz target loudly
// instead of being silently served.
#include "fake_ort.h"

#include <algorithm>
#include <cstring>
#include <new>

struct OrtStatus {
  OrtErrorCode code;
  std::string message;
};
struct OrtKernelInfo {
  dc_onnx_fuzz::FakeNode* node;
};
struct OrtKernelContext {
  dc_onnx_fuzz::FakeRun* run;
};
struct OrtTensorTypeAndShapeInfo {
  ONNXTensorElementDataType type;
  std::vector<int64_t> shape;
};
struct OrtMemoryInfo {};
struct OrtOpAttr {};
struct OrtOp {};

namespace dc_onnx_fuzz {
namespace {

OrtStatus* error(const std::string& message) {
  return new OrtStatus{ORT_INVALID_ARGUMENT, message};
}

template <typename T>
OrtStatus* attribute(const OrtKernelInfo* info, const char* name,
                     const std::map<std::string, T>& from, const T** out) {
  (void)info;
  const auto it = from.find(name);
  if (it == from.end()) return error(std::string("no attribute ") + name);
  *out = &it->second;
  return nullptr;
}

size_t element_count(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

size_t element_size(ONNXTensorElementDataType t) {
  return t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ? 4 : 1;
}

OrtApi make_api() {
  OrtApi api;
  std::memset(&api, 0, sizeof api);
  api.CreateStatus = [](OrtErrorCode code, const char* msg) noexcept -> OrtStatus* {
    return new OrtStatus{code, msg};
  };
  api.GetErrorCode = [](const OrtStatus* s) noexcept { return s->code; };
  api.GetErrorMessage = [](const OrtStatus* s) noexcept { return s->message.c_str(); };
  api.ReleaseStatus = [](OrtStatus* s) noexcept { delete s; };

  api.KernelInfoGetAttribute_int64 = [](const OrtKernelInfo* info, const char* name,
                                        int64_t* out) noexcept -> OrtStatus* {
    const std::vector<int64_t>* v = nullptr;
    if (OrtStatus* s = attribute(info, name, info->node->ints, &v)) return s;
    if (v->size() != 1) return error("not a single int");
    *out = (*v)[0];
    return nullptr;
  };
  api.KernelInfoGetAttribute_float = [](const OrtKernelInfo* info, const char* name,
                                        float* out) noexcept -> OrtStatus* {
    const float* v = nullptr;
    if (OrtStatus* s = attribute(info, name, info->node->floats, &v)) return s;
    *out = *v;
    return nullptr;
  };
  api.KernelInfoGetAttribute_string = [](const OrtKernelInfo* info, const char* name, char* out,
                                         size_t* size) noexcept -> OrtStatus* {
    const std::string* v = nullptr;
    if (OrtStatus* s = attribute(info, name, info->node->strings, &v)) return s;
    if (out == nullptr) {
      *size = v->size() + 1;
      return nullptr;
    }
    if (*size < v->size() + 1) return error("buffer too small");
    std::memcpy(out, v->c_str(), v->size() + 1);
    *size = v->size() + 1;
    return nullptr;
  };
  api.KernelInfoGetAttributeArray_int64 = [](const OrtKernelInfo* info, const char* name,
                                             int64_t* out, size_t* size) noexcept -> OrtStatus* {
    const std::vector<int64_t>* v = nullptr;
    if (OrtStatus* s = attribute(info, name, info->node->ints, &v)) return s;
    if (out == nullptr) {
      *size = v->size();
      return nullptr;
    }
    if (*size < v->size()) return error("buffer too small");
    std::copy(v->begin(), v->end(), out);
    *size = v->size();
    return nullptr;
  };
  api.KernelInfo_GetInputCount = [](const OrtKernelInfo* info, size_t* out) noexcept
      -> OrtStatus* {
    *out = info->node->constants.size();
    return nullptr;
  };
  // Every input the node has is given (has_input): its name is never empty.
  api.KernelInfo_GetInputName = [](const OrtKernelInfo* info, size_t index, char* out,
                                   size_t* size) noexcept -> OrtStatus* {
    if (index >= info->node->constants.size()) return error("input index out of range");
    static const char kName[] = "input";
    if (out != nullptr) {
      if (*size < sizeof kName) return error("buffer too small");
      std::memcpy(out, kName, sizeof kName);
    }
    *size = sizeof kName;
    return nullptr;
  };
  api.KernelInfo_GetNodeName = [](const OrtKernelInfo*, char* out, size_t* size) noexcept
      -> OrtStatus* {
    static const char kName[] = "fuzz_node";
    if (out != nullptr) {
      if (*size < sizeof kName) return error("buffer too small");
      std::memcpy(out, kName, sizeof kName);
    }
    *size = sizeof kName;
    return nullptr;
  };
  api.KernelInfoGetConstantInput_tensor = [](const OrtKernelInfo* info, size_t index,
                                             int* is_constant, const OrtValue** out) noexcept
      -> OrtStatus* {
    const FakeNode& n = *info->node;
    if (index >= n.constants.size()) return error("input index out of range");
    *is_constant = n.is_constant[index] ? 1 : 0;
    *out = n.is_constant[index] ? &n.constants[index] : nullptr;
    return nullptr;
  };

  api.IsTensor = [](const OrtValue*, int* out) noexcept -> OrtStatus* {
    *out = 1;
    return nullptr;
  };
  api.GetTensorTypeAndShape = [](const OrtValue* v, OrtTensorTypeAndShapeInfo** out) noexcept
      -> OrtStatus* {
    *out = new OrtTensorTypeAndShapeInfo{v->type, v->shape};
    return nullptr;
  };
  api.ReleaseTensorTypeAndShapeInfo = [](OrtTensorTypeAndShapeInfo* p) noexcept { delete p; };
  api.GetTensorElementType = [](const OrtTensorTypeAndShapeInfo* t,
                                ONNXTensorElementDataType* out) noexcept -> OrtStatus* {
    *out = t->type;
    return nullptr;
  };
  api.GetDimensionsCount = [](const OrtTensorTypeAndShapeInfo* t, size_t* out) noexcept
      -> OrtStatus* {
    *out = t->shape.size();
    return nullptr;
  };
  api.GetDimensions = [](const OrtTensorTypeAndShapeInfo* t, int64_t* out, size_t n) noexcept
      -> OrtStatus* {
    std::copy_n(t->shape.begin(), std::min(n, t->shape.size()), out);
    return nullptr;
  };
  api.GetTensorShapeElementCount = [](const OrtTensorTypeAndShapeInfo* t, size_t* out) noexcept
      -> OrtStatus* {
    *out = element_count(t->shape);
    return nullptr;
  };
  api.GetTensorMutableData = [](OrtValue* v, void** out) noexcept -> OrtStatus* {
    *out = v->data;
    return nullptr;
  };

  api.CreateCpuMemoryInfo = [](OrtAllocatorType, OrtMemType, OrtMemoryInfo** out) noexcept
      -> OrtStatus* {
    *out = new OrtMemoryInfo{};
    return nullptr;
  };
  api.ReleaseMemoryInfo = [](OrtMemoryInfo* p) noexcept { delete p; };
  api.CreateTensorWithDataAsOrtValue =
      [](const OrtMemoryInfo*, void* data, size_t bytes, const int64_t* shape, size_t rank,
         ONNXTensorElementDataType type, OrtValue** out) noexcept -> OrtStatus* {
    OrtValue v;
    v.type = type;
    v.shape.assign(shape, shape + rank);
    v.data = data;
    for (int64_t d : v.shape)
      if (d < 0) return error("negative dim");
    // As ORT: the buffer must hold exactly the shape's elements.
    if (element_count(v.shape) * element_size(type) != bytes) return error("size mismatch");
    *out = new OrtValue(std::move(v));
    return nullptr;
  };
  api.ReleaseValue = [](OrtValue* v) noexcept { delete v; };
  api.CreateOpAttr = [](const char*, const void*, int len, OrtOpAttrType, OrtOpAttr** out) noexcept
      -> OrtStatus* {
    if (len < 0) return error("negative attribute length");
    *out = new OrtOpAttr{};
    return nullptr;
  };
  api.ReleaseOpAttr = [](OrtOpAttr* p) noexcept { delete p; };
  api.CreateOp = [](const OrtKernelInfo*, const char*, const char*, int, const char**,
                    const ONNXTensorElementDataType*, int, const OrtOpAttr* const*, int, int,
                    int, OrtOp** out) noexcept -> OrtStatus* {
    *out = new OrtOp{};
    return nullptr;
  };
  api.ReleaseOp = [](OrtOp* p) noexcept { delete p; };
  api.InvokeOp = [](const OrtKernelContext*, const OrtOp*, const OrtValue* const*, int,
                    OrtValue* const*, int) noexcept -> OrtStatus* { return nullptr; };

  api.KernelContext_GetInputCount = [](const OrtKernelContext* c, size_t* out) noexcept
      -> OrtStatus* {
    *out = c->run->inputs.size();
    return nullptr;
  };
  api.KernelContext_GetOutputCount = [](const OrtKernelContext*, size_t* out) noexcept
      -> OrtStatus* {
    *out = 1;
    return nullptr;
  };
  api.KernelContext_GetInput = [](const OrtKernelContext* c, size_t index,
                                  const OrtValue** out) noexcept -> OrtStatus* {
    *out = index < c->run->inputs.size() ? c->run->inputs[index] : nullptr;
    return nullptr;
  };
  api.KernelContext_GetOutput = [](OrtKernelContext* c, size_t index, const int64_t* dims,
                                   size_t rank, OrtValue** out) noexcept -> OrtStatus* {
    if (index != 0) return error("one output only");
    FakeRun& run = *c->run;
    size_t n = 1;
    for (size_t i = 0; i < rank; ++i) {
      if (dims[i] < 0) return error("negative output dim");
      if (dims[i] != 0 && n > run.max_output_elements / static_cast<size_t>(dims[i]))
        return error("output too large");
      n *= static_cast<size_t>(dims[i]);
    }
    run.outputs.assign(1, OrtValue{});
    OrtValue& v = run.outputs[0];
    v.shape.assign(dims, dims + rank);
    try {
      v.storage.assign(n, 0.0f);
    } catch (const std::bad_alloc&) {
      return error("out of memory");
    }
    v.data = v.storage.data();
    *out = &v;
    return nullptr;
  };
  // No allocator: the kernels' scratch (scratch.h) then comes from the heap.
  api.KernelContext_GetAllocator = [](const OrtKernelContext*, const OrtMemoryInfo*,
                                      OrtAllocator**) noexcept -> OrtStatus* {
    return error("no allocator in the fake");
  };
  api.KernelContext_ParallelFor = [](const OrtKernelContext*, void (*fn)(void*, size_t),
                                     size_t total, size_t, void* data) noexcept -> OrtStatus* {
    for (size_t i = 0; i < total; ++i) fn(data, i);
    return nullptr;
  };
  return api;
}

}  // namespace

void install_fake_ort() {
  static const OrtApi api = make_api();
  Ort::InitApi(&api);
}

OrtKernelInfo* kernel_info(FakeNode* node) {
  thread_local OrtKernelInfo info;
  info.node = node;
  return &info;
}

OrtKernelContext* kernel_context(FakeRun* run) {
  thread_local OrtKernelContext context;
  context.run = run;
  return &context;
}

}  // namespace dc_onnx_fuzz
