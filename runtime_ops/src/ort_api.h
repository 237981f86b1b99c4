// Includes ORT's C++ wrapper in manual-init mode: the API table comes from the
// RegisterCustomOps caller (register.cc), never from a linked libonnxruntime.
#pragma once

#ifndef ORT_API_MANUAL_INIT
#define ORT_API_MANUAL_INIT
#endif
#include "onnxruntime_cxx_api.h"

namespace dc_onnx {

// The API version we ask ORT for and declare on our ops: 17 = ORT 1.17, the oldest
// release with KernelContext_ParallelFor. ORT 1.19 rejects ops declaring newer versions.
constexpr uint32_t kOrtApiVersion = 17;

}  // namespace dc_onnx
