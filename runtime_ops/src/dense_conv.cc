#include "dense_conv.h"

#include <utility>

namespace dc_onnx {

DenseConv::DenseConv(const OrtKernelInfo* info, std::shared_ptr<const std::vector<float>> weight,
                     std::vector<int64_t> shape, const ConvAttributes& attrs, bool with_bias)
    : weight_(std::move(weight)),
      shape_(std::move(shape)),
      memory_(Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault)),
      with_bias_(with_bias) {
  // ORT's Conv only reads its inputs: the tensor may view the shared, const weight.
  weight_value_ = Ort::Value::CreateTensor<float>(memory_, const_cast<float*>(weight_->data()),
                                                  weight_->size(), shape_.data(), shape_.size());
  auto ints = [](const char* name, const std::vector<int64_t>& v) {
    return Ort::OpAttr(name, v.data(), static_cast<int>(v.size()), OrtOpAttrType::ORT_OP_ATTR_INTS);
  };
  std::vector<Ort::OpAttr> list;
  list.push_back(ints("kernel_shape", attrs.kernel_shape()));
  list.push_back(ints("strides", attrs.strides()));
  list.push_back(ints("dilations", attrs.dilations()));
  list.push_back(ints("pads", attrs.pad_list()));
  list.emplace_back("group", &attrs.group, 1, OrtOpAttrType::ORT_OP_ATTR_INT);
  list.emplace_back("auto_pad", attrs.auto_pad.c_str(), static_cast<int>(attrs.auto_pad.size()),
                    OrtOpAttrType::ORT_OP_ATTR_STRING);
  const char* type_names[] = {"T"};
  const ONNXTensorElementDataType types[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
  op_ = Ort::Op::Create(info, "Conv", "", 11, type_names, types, 1, list.data(), list.size(),
                        with_bias ? 3 : 2, 1);
}

void DenseConv::run(const Ort::KernelContext& ctx, const OrtValue* x, const OrtValue* bias,
                    OrtValue* y) const {
  const OrtValue* inputs[] = {x, weight_value_, bias};
  OrtValue* outputs[] = {y};
  Ort::ThrowOnError(Ort::GetApi().InvokeOp(ctx.GetOrtKernelContext(), op_, inputs,
                                           with_bias_ ? 3 : 2, outputs, 1));
}

}  // namespace dc_onnx
