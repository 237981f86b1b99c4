# Finds the ONNX Runtime C/C++ API headers. Only headers: the library never links
# libonnxruntime, because ORT hands its API table to RegisterCustomOps at load time.
#
# Search order:
#   1. -DORT_INCLUDE_DIR=<dir>           (cache variable)
#   2. environment variable ORT_INCLUDE_DIR (e.g. set while pip builds the package)
#   3. <repo>/third_party/onnxruntime/include (written by scripts/fetch_ort_headers.sh)
#   4. system dirs (/usr/include/onnxruntime, /usr/local/include/onnxruntime, ...)
#
# Result: ORT_INCLUDE_DIR (cache) and the INTERFACE target OrtHeaders::headers.

set(_ort_hint_msg
  "ONNX Runtime headers (onnxruntime_c_api.h) not found. Run scripts/fetch_ort_headers.sh "
  "from the repository root, or pass -DORT_INCLUDE_DIR=<dir with onnxruntime_c_api.h> "
  "(or set the environment variable ORT_INCLUDE_DIR).")

if(NOT ORT_INCLUDE_DIR AND DEFINED ENV{ORT_INCLUDE_DIR})
  set(ORT_INCLUDE_DIR "$ENV{ORT_INCLUDE_DIR}" CACHE PATH "Directory with onnxruntime_c_api.h")
endif()

if(ORT_INCLUDE_DIR)
  # An explicit directory must be right: never fall back silently to another copy.
  if(NOT EXISTS "${ORT_INCLUDE_DIR}/onnxruntime_c_api.h")
    message(FATAL_ERROR "ORT_INCLUDE_DIR='${ORT_INCLUDE_DIR}' has no onnxruntime_c_api.h. "
                        ${_ort_hint_msg})
  endif()
else()
  find_path(ORT_INCLUDE_DIR onnxruntime_c_api.h
    HINTS "${CMAKE_CURRENT_LIST_DIR}/../../third_party/onnxruntime/include"
    PATHS /usr/include/onnxruntime /usr/local/include/onnxruntime
    PATH_SUFFIXES onnxruntime
    DOC "Directory with onnxruntime_c_api.h")
endif()

if(NOT ORT_INCLUDE_DIR)
  message(FATAL_ERROR ${_ort_hint_msg})
endif()

# The C++ wrapper is header-only and needed too.
if(NOT EXISTS "${ORT_INCLUDE_DIR}/onnxruntime_cxx_api.h")
  message(FATAL_ERROR "${ORT_INCLUDE_DIR} has onnxruntime_c_api.h but no onnxruntime_cxx_api.h. "
                      ${_ort_hint_msg})
endif()

file(STRINGS "${ORT_INCLUDE_DIR}/onnxruntime_c_api.h" _ort_ver_line
     REGEX "^#define ORT_API_VERSION [0-9]+")
string(REGEX REPLACE "^#define ORT_API_VERSION ([0-9]+).*" "\\1"
       OrtHeaders_API_VERSION "${_ort_ver_line}")
if(OrtHeaders_API_VERSION LESS 17)
  message(FATAL_ERROR "ONNX Runtime headers in ${ORT_INCLUDE_DIR} have API version "
                      "${OrtHeaders_API_VERSION}; version 17 or newer is needed (ORT >= 1.17).")
endif()
message(STATUS "ONNX Runtime headers: ${ORT_INCLUDE_DIR} (API version ${OrtHeaders_API_VERSION})")

if(NOT TARGET OrtHeaders::headers)
  add_library(OrtHeaders::headers INTERFACE IMPORTED)
  # SYSTEM: ORT's headers do not compile cleanly under our warning set.
  set_target_properties(OrtHeaders::headers PROPERTIES
    INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${ORT_INCLUDE_DIR}"
    INTERFACE_INCLUDE_DIRECTORIES "${ORT_INCLUDE_DIR}")
endif()
set(OrtHeaders_FOUND TRUE)
