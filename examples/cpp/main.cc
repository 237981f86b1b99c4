// dc_onnx_run: run a compiled dc-onnx model with ONNX Runtime's C++ API and print the top-1
// class of each sample.
//
//   dc_onnx_run MODEL.dc.onnx LIBDC_ONNX_OPS.so INPUT [--save OUTPUT.raw]
//
// INPUT is a float32 .npy file, or raw float32 values whose count fills the model's input
// shape (a symbolic batch dimension takes whatever is left). The model's side file (.dcw)
// must lie beside it. --save writes the first output as raw float32, for comparison.
#include <onnxruntime_cxx_api.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "npy.h"

namespace {

// The model's input shape with its symbolic dimensions filled from the input file.
std::vector<int64_t> ResolveShape(std::vector<int64_t> model_shape, const InputTensor& input) {
  if (!input.shape.empty()) {
    if (input.shape.size() != model_shape.size())
      throw std::runtime_error("the input has rank " + std::to_string(input.shape.size()) +
                               ", the model expects " + std::to_string(model_shape.size()));
    for (size_t i = 0; i < model_shape.size(); ++i)
      if (model_shape[i] > 0 && model_shape[i] != input.shape[i])
        throw std::runtime_error("input dimension " + std::to_string(i) + " is " +
                                 std::to_string(input.shape[i]) + ", the model expects " +
                                 std::to_string(model_shape[i]));
    return input.shape;
  }
  size_t fixed = 1, symbolic = 0;
  for (int64_t d : model_shape) {
    if (d > 0) fixed *= static_cast<size_t>(d);
    else ++symbolic;
  }
  if (symbolic > 1) throw std::runtime_error("raw input for a model with several symbolic dims: use .npy");
  if (input.data.size() % fixed != 0 || (symbolic == 0 && input.data.size() != fixed))
    throw std::runtime_error(std::to_string(input.data.size()) + " values do not fill the input shape");
  for (int64_t& d : model_shape)
    if (d <= 0) d = static_cast<int64_t>(input.data.size() / fixed);
  return model_shape;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && !(argc == 6 && std::string(argv[4]) == "--save")) {
    std::fprintf(stderr, "usage: %s MODEL.dc.onnx LIBDC_ONNX_OPS.so INPUT(.npy|raw float32) "
                 "[--save OUTPUT.raw]\n", argv[0]);
    return 2;
  }
  const std::string model_path = argv[1], library = argv[2], input_path = argv[3];
  try {
    Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "dc_onnx_run");
    Ort::SessionOptions options;
    options.SetIntraOpNumThreads(1);
    // The custom ops (domain ai.dc_onnx) decode the compressed weights once, here.
    options.RegisterCustomOpsLibrary(library.c_str());
    Ort::Session session(env, model_path.c_str(), options);

    Ort::AllocatorWithDefaultOptions allocator;
    Ort::AllocatedStringPtr input_name = session.GetInputNameAllocated(0, allocator);
    Ort::AllocatedStringPtr output_name = session.GetOutputNameAllocated(0, allocator);
    Ort::TypeInfo input_type = session.GetInputTypeInfo(0);  // owns what input_info views
    auto input_info = input_type.GetTensorTypeAndShapeInfo();
    if (input_info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      throw std::runtime_error("the model's first input is not float32");

    InputTensor input = ReadInput(input_path);
    std::vector<int64_t> shape = ResolveShape(input_info.GetShape(), input);
    Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    Ort::Value x = Ort::Value::CreateTensor<float>(memory, input.data.data(), input.data.size(),
                                                   shape.data(), shape.size());
    const char* input_names[] = {input_name.get()};
    const char* output_names[] = {output_name.get()};
    std::vector<Ort::Value> outputs =
        session.Run(Ort::RunOptions{nullptr}, input_names, &x, 1, output_names, 1);

    auto output_info = outputs[0].GetTensorTypeAndShapeInfo();
    if (output_info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      throw std::runtime_error("the model's first output is not float32");
    const std::vector<int64_t> out_shape = output_info.GetShape();
    const size_t total = output_info.GetElementCount();
    const size_t classes = out_shape.empty() ? 1 : static_cast<size_t>(out_shape.back());
    const float* y = outputs[0].GetTensorData<float>();
    for (size_t row = 0; classes > 0 && row < total / classes; ++row) {
      size_t best = 0;
      for (size_t c = 1; c < classes; ++c)
        if (y[row * classes + c] > y[row * classes + best]) best = c;
      std::printf("sample %zu: top-1 class %zu (score %.6g)\n", row, best, y[row * classes + best]);
    }
    if (argc == 6) {
      std::ofstream out(argv[5], std::ios::binary);
      out.write(reinterpret_cast<const char*>(y), static_cast<std::streamsize>(total * sizeof(float)));
      if (!out) throw std::runtime_error(std::string(argv[5]) + ": cannot write");
    }
  } catch (const std::exception& e) {  // Ort::Exception derives from std::exception
    std::fprintf(stderr, "dc_onnx_run: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
