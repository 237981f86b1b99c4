// Adapts a kernel class to ORT's C struct OrtCustomOp. Kernel needs:
//   explicit Kernel(const OrtKernelInfo*);       // validates + decodes, may throw
//   void compute(OrtKernelContext*) const;       // may throw dc_onnx::Error
// Every exception is turned into an OrtStatus here; none crosses into ORT.
#pragma once

#include <climits>
#include <new>

#include "errors.h"
#include "ort_api.h"

namespace dc_onnx {

// Inputs of the compute ops: X, header, codebook, codes, gaps, code_lengths
// [, bias [, row_scales]]. Types by position.
inline ONNXTensorElementDataType compressed_input_type(size_t index) {
  switch (index) {
    case 1: case 3: case 4: case 5: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    default: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
}

// Input and output element types of an op; ops with other types specialize it.
template <typename Kernel>
struct OpTypes {
  static ONNXTensorElementDataType input(size_t index) { return compressed_input_type(index); }
  static ONNXTensorElementDataType output(size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

// Type and shape inference of an op's output beyond ORT's own, which types an UNDEFINED
// output like the one UNDEFINED input; an op that needs more specializes `infer`. ORT
// reads every input's type before calling it, so an op with `infer` must never be given
// an empty input name.
template <typename Kernel>
struct OpInference {
  static constexpr OrtStatusPtr(ORT_API_CALL* infer)(const OrtCustomOp*,
                                                     OrtShapeInferContext*) = nullptr;
};

template <typename F>
OrtStatusPtr guarded(F&& body) noexcept {
  try {
    body();
    return nullptr;
  } catch (const Error& e) {
    return Ort::GetApi().CreateStatus(e.code(), e.what());
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::bad_alloc&) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, "dc_onnx: out of memory");
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, e.what());
  } catch (...) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, "dc_onnx: unknown C++ exception");
  }
}

template <typename Kernel>
class CustomOp : public OrtCustomOp {
 public:
  // Inputs `first_optional` .. `num_inputs` - 1 are optional: the streams (empty from
  // format version 3, which slices them from the side file), the bias and the row scales.
  CustomOp(const char* name, size_t num_inputs, size_t first_optional)
      : OrtCustomOp{}, name_(name), num_inputs_(num_inputs), first_optional_(first_optional) {
    // The version ORT reads: fields added after API 17 are never looked at.
    version = kOrtApiVersion;
    GetName = [](const OrtCustomOp* op) { return self(op).name_; };
    GetExecutionProviderType = [](const OrtCustomOp*) -> const char* { return nullptr; };
    GetInputTypeCount = [](const OrtCustomOp* op) { return self(op).num_inputs_; };
    GetInputType = [](const OrtCustomOp*, size_t i) { return OpTypes<Kernel>::input(i); };
    GetOutputTypeCount = [](const OrtCustomOp*) { return size_t{1}; };
    GetOutputType = [](const OrtCustomOp*, size_t i) { return OpTypes<Kernel>::output(i); };
    GetInputCharacteristic = [](const OrtCustomOp* op, size_t i) {
      return i >= self(op).first_optional_ ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
    };
    GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
    GetInputMemoryType = [](const OrtCustomOp*, size_t) { return OrtMemTypeDefault; };
    GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
    GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
    GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
    GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
    CreateKernelV2 = [](const OrtCustomOp*, const OrtApi*, const OrtKernelInfo* info,
                        void** kernel) -> OrtStatusPtr {
      *kernel = nullptr;
      return guarded([&] { *kernel = new Kernel(info); });
    };
    KernelComputeV2 = [](void* kernel, OrtKernelContext* ctx) -> OrtStatusPtr {
      return guarded([&] { static_cast<const Kernel*>(kernel)->compute(ctx); });
    };
    KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
    InferOutputShapeFn = OpInference<Kernel>::infer;
    GetStartVersion = [](const OrtCustomOp*) { return 1; };
    GetEndVersion = [](const OrtCustomOp*) { return INT_MAX; };
  }

 private:
  static const CustomOp& self(const OrtCustomOp* op) { return *static_cast<const CustomOp*>(op); }

  const char* name_;
  size_t num_inputs_;
  size_t first_optional_;
};

}  // namespace dc_onnx
