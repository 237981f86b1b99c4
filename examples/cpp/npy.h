// Reading an input tensor for the example: a .npy file (float32, C order) or raw float32.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct InputTensor {
  std::vector<float> data;
  std::vector<int64_t> shape;  // empty for a raw file: the model's input shape decides
};

// Throws std::runtime_error saying what is wrong with the file.
InputTensor ReadInput(const std::string& path);
