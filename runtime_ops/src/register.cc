// Library entry point: ORT calls RegisterCustomOps when a session's options load this
// library; it adds the domain ai.dc_onnx with its five ops to those options.
#include <memory>
#include <mutex>
#include <vector>

#include "custom_op.h"
#include "op_constant.h"
#include "op_gather.h"
#include "ops.h"
#include "simd.h"

namespace {

using dc_onnx::CustomOp;

// Op descriptions live for the whole process (ORT keeps pointers to them).
// Required: X and the header (CompressedConstant: the header). Optional: the four streams
// (inputs 2-5, empty from format version 3), the bias (input 6; MatMul and Gather have
// none, the slot stays empty) and the row scales (input 7; CompressedConstant: 1-5).
const CustomOp<dc_onnx::GemmKernel> kGemmOp("CompressedGemm", 8, 2);
const CustomOp<dc_onnx::MatMulKernel> kMatMulOp("CompressedMatMul", 8, 2);
const CustomOp<dc_onnx::ConvKernel> kConvOp("CompressedConv", 8, 2);
const CustomOp<dc_onnx::ConstantKernel> kConstantOp("CompressedConstant", 6, 1);
const CustomOp<dc_onnx::GatherKernel> kGatherOp("CompressedGather", 8, 2);

constexpr const char* kDomain = "ai.dc_onnx";

struct DomainDeleter {
  void operator()(OrtCustomOpDomain* d) const { Ort::GetApi().ReleaseCustomOpDomain(d); }
};

// One domain object per registration, kept for the life of the process: sessions
// created from those options refer to it.
std::mutex g_domains_mutex;
std::vector<std::unique_ptr<OrtCustomOpDomain, DomainDeleter>>& domains() {
  static auto* list = new std::vector<std::unique_ptr<OrtCustomOpDomain, DomainDeleter>>();
  return *list;  // leaked on purpose: ORT may outlive our static destructors
}

}  // namespace

#if defined(_WIN32)
#define DC_ONNX_EXPORT __declspec(dllexport)
#else
#define DC_ONNX_EXPORT __attribute__((visibility("default")))
#endif

extern "C" DC_ONNX_EXPORT OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(dc_onnx::kOrtApiVersion);
  if (api == nullptr) {
    // Older than ORT 1.17: report through the oldest API table, which every ORT has.
    const OrtApi* v1 = api_base->GetApi(1);
    return v1 == nullptr ? nullptr
                         : v1->CreateStatus(ORT_FAIL,
                                            "dc_onnx: the custom-op library needs ONNX Runtime "
                                            ">= 1.17");
  }
  static std::once_flag api_once;  // sessions may register from several threads
  std::call_once(api_once, [api] { Ort::InitApi(api); });
  (void)dc_onnx::isa();  // DC_ONNX_ISA is read here, once, before any kernel runs
  return dc_onnx::guarded([&] {
    OrtCustomOpDomain* raw = nullptr;
    Ort::ThrowOnError(api->CreateCustomOpDomain(kDomain, &raw));
    std::unique_ptr<OrtCustomOpDomain, DomainDeleter> domain(raw);
    for (const OrtCustomOp* op : {static_cast<const OrtCustomOp*>(&kGemmOp),
                                  static_cast<const OrtCustomOp*>(&kMatMulOp),
                                  static_cast<const OrtCustomOp*>(&kConvOp),
                                  static_cast<const OrtCustomOp*>(&kConstantOp),
                                  static_cast<const OrtCustomOp*>(&kGatherOp)})
      Ort::ThrowOnError(api->CustomOpDomain_Add(raw, const_cast<OrtCustomOp*>(op)));
    {  // kept before handing it to ORT, so the options never point to a freed domain
      const std::lock_guard<std::mutex> lock(g_domains_mutex);
      domains().push_back(std::move(domain));
    }
    Ort::ThrowOnError(api->AddCustomOpDomain(options, raw));
  });
}
