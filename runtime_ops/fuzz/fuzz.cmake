# The libFuzzer targets (included by CMakeLists.txt when DC_ONNX_FUZZ is ON; `make fuzz`
# configures that with clang). Everything is built with ASan + UBSan and coverage.

# The standalone decoder alone: side file + attributes -> decoded weight or DecodeError.
add_executable(fuzz_decoder fuzz/fuzz_decoder.cc)
target_link_libraries(fuzz_decoder PRIVATE dc_onnx_decoder)
dc_onnx_compile_options(fuzz_decoder)
target_link_options(fuzz_decoder PRIVATE -fsanitize=fuzzer)

# Kernel creation: the three ops' constructors (attribute checks, weight loading,
# resident forms, dense Conv set-up) driven through a fake ORT API (fuzz/fake_ort.cc)
# that serves the fuzzed attributes and constant inputs.
list(APPEND CMAKE_MODULE_PATH "${CMAKE_CURRENT_SOURCE_DIR}/cmake")
find_package(OrtHeaders REQUIRED)
add_executable(fuzz_kernel fuzz/fuzz_kernel.cc fuzz/fake_ort.cc ${DC_ONNX_KERNEL_SOURCES})
target_link_libraries(fuzz_kernel PRIVATE dc_onnx_decoder OrtHeaders::headers)
dc_onnx_compile_options(fuzz_kernel)
target_link_options(fuzz_kernel PRIVATE -fsanitize=fuzzer)
