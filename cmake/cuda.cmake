# BLOCKFLASH_CUDA=AUTO|ON|OFF. AUTO enables CUDA when a CUDA compiler is found.
# Default architectures: Hopper (sm_90a) and consumer Blackwell (sm_120a, sm_121a).
set(BLOCKFLASH_WITH_CUDA OFF)
if(NOT BLOCKFLASH_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER)
    find_program(_bf_nvcc nvcc PATHS /usr/local/cuda/bin)
    if(_bf_nvcc)
      set(CMAKE_CUDA_COMPILER ${_bf_nvcc})
    endif()
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(BLOCKFLASH_WITH_CUDA ON)
  elseif(BLOCKFLASH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "BLOCKFLASH_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()

if(BLOCKFLASH_WITH_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
    set(CMAKE_CUDA_ARCHITECTURES "90a;120a;121a")
  endif()
  enable_language(CUDA)
  # CMake 3.25 does not know nvcc's C++20 flag (nvcc >= 12 has it): tell it.
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA_STANDARD 20)
  find_package(CUDAToolkit REQUIRED)
  file(GLOB_RECURSE cuda_srcs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/backend/cuda/*.cu
       ${CMAKE_SOURCE_DIR}/src/backend/cuda/*.cpp)
  add_library(bf_cuda STATIC ${cuda_srcs})
  target_include_directories(bf_cuda PUBLIC ${CMAKE_SOURCE_DIR}/src)
  # bf_core for tensors and logging; bf_backend for the kernel registry (a static-library
  # cycle, bf_backend links bf_cuda too, which CMake resolves by repeating them).
  target_link_libraries(bf_cuda PUBLIC CUDA::cudart CUDA::cublasLt $<LINK_ONLY:bf_core> $<LINK_ONLY:bf_backend>)
  string(REPLACE ";" "," _bf_archs "${CMAKE_CUDA_ARCHITECTURES}")  # a ';' would split the define
  target_compile_definitions(bf_cuda PUBLIC BLOCKFLASH_CUDA_ARCHS="${_bf_archs}")
  target_compile_options(bf_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo>)
  message(STATUS "blockflash: CUDA backend ON (architectures ${CMAKE_CUDA_ARCHITECTURES})")
else()
  message(STATUS "blockflash: CUDA backend OFF")
endif()
