# Finds every external package as an imported target. A missing package stops the configure
# with the apt package that provides it.
function(infllm_require found what apt)
  if(NOT ${found})
    message(FATAL_ERROR "infllm: ${what} not found. Install it with: sudo apt-get install ${apt}")
  endif()
endfunction()

find_package(Threads REQUIRED)
find_package(OpenMP)
infllm_require(OpenMP_CXX_FOUND "OpenMP for C++" "libomp-dev (or use g++, which ships libgomp)")

find_package(HDF5 COMPONENTS C)
infllm_require(HDF5_FOUND "HDF5 (C API)" "libhdf5-dev")
if(NOT TARGET hdf5::hdf5)
  add_library(hdf5::hdf5 INTERFACE IMPORTED)
  target_include_directories(hdf5::hdf5 INTERFACE ${HDF5_INCLUDE_DIRS})
  target_link_libraries(hdf5::hdf5 INTERFACE ${HDF5_LIBRARIES})
  target_compile_definitions(hdf5::hdf5 INTERFACE ${HDF5_DEFINITIONS})
endif()

find_package(yaml-cpp QUIET)
infllm_require(yaml-cpp_FOUND "yaml-cpp" "libyaml-cpp-dev")
if(TARGET yaml-cpp::yaml-cpp)
  set(INFLLM_YAML yaml-cpp::yaml-cpp)
else()
  set(INFLLM_YAML yaml-cpp)
endif()

if(INFLLM_TESTS)
  find_package(GTest)
  infllm_require(GTest_FOUND "GoogleTest" "libgtest-dev")
endif()

set(INFLLM_WITH_CUDA OFF)
if(INFLLM_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_ARCHITECTURES OFF)
    enable_language(CUDA)
    # CMake 3.25 knows no CUDA20 dialect flag for nvcc 13: -std=c++20 is passed directly.
    find_package(CUDAToolkit REQUIRED)
    set(INFLLM_WITH_CUDA ON)
  else()
    message(STATUS "infllm: nvcc not found, building the CPU backend only")
  endif()
endif()

if(INFLLM_WITH_CUDA)
  find_library(CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR})
  find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  infllm_require(CUDNN_LIBRARY "cuDNN" "cudnn9-cuda-13 (NVIDIA's CUDA apt repository)")
  add_library(infllm::cudnn UNKNOWN IMPORTED)
  set_target_properties(infllm::cudnn PROPERTIES IMPORTED_LOCATION ${CUDNN_LIBRARY}
                        INTERFACE_INCLUDE_DIRECTORIES ${CUDNN_INCLUDE_DIR})

  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  infllm_require(NCCL_LIBRARY "NCCL" "libnccl-dev (NVIDIA's CUDA apt repository)")
  add_library(infllm::nccl UNKNOWN IMPORTED)
  set_target_properties(infllm::nccl PROPERTIES IMPORTED_LOCATION ${NCCL_LIBRARY}
                        INTERFACE_INCLUDE_DIRECTORIES ${NCCL_INCLUDE_DIR})
endif()
