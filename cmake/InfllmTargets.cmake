# infllm_add_library(<folder> SOURCES ... [CUDA_SOURCES ...] [NO_CUDA_SOURCES ...] [DEPS ...])
#   One static library per folder, named infllm_<folder>. The backend is chosen here and only
#   here: CUDA_SOURCES (the kernels and every other user of the CUDA runtime) when the CUDA
#   backend is on, NO_CUDA_SOURCES (the folder's no_cuda.cpp: the same functions, each throwing
#   "this build has no CUDA backend") when it is off. So code above core calls cuda:: functions
#   behind `device.is_cuda()` with no #if. Include paths are rooted at the repository:
#   #include "core/tensor.h".
# infllm_add_test(<name> SOURCES ... DEPS ... LABELS cpu|gpu|multigpu)
# infllm_add_executable(<name> SOURCES ... DEPS ...)

set(INFLLM_HOST_WARNINGS -Wall -Wextra -Wno-unused-parameter)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  # GCC 12 reports false -Wrestrict positives inside std::string at -O3 (GCC bug 105329).
  list(APPEND INFLLM_HOST_WARNINGS -Wno-restrict)
endif()
if(INFLLM_WERROR)
  list(APPEND INFLLM_HOST_WARNINGS -Werror)
endif()

function(infllm_compile_options target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${INFLLM_HOST_WARNINGS}>)
  if(INFLLM_WITH_CUDA)
    separate_arguments(gencode UNIX_COMMAND "${INFLLM_CUDA_GENCODE}")
    string(REPLACE ";" "," host_warnings "${INFLLM_HOST_WARNINGS}")
    set(cuda_flags -std=c++20 ${gencode} --expt-relaxed-constexpr -lineinfo -Xcompiler=${host_warnings})
    if(INFLLM_WERROR)
      list(APPEND cuda_flags --Werror=all-warnings)
    endif()
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${cuda_flags}>)
    target_compile_definitions(${target} PUBLIC INFLLM_WITH_CUDA=1)
  endif()
endfunction()

function(infllm_add_library folder)
  cmake_parse_arguments(ARG "" "" "SOURCES;CUDA_SOURCES;NO_CUDA_SOURCES;DEPS" ${ARGN})
  set(sources ${ARG_SOURCES})
  if(INFLLM_WITH_CUDA)
    list(APPEND sources ${ARG_CUDA_SOURCES})
  else()
    list(APPEND sources ${ARG_NO_CUDA_SOURCES})
  endif()
  add_library(infllm_${folder} STATIC ${sources})
  target_include_directories(infllm_${folder} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(infllm_${folder} PUBLIC ${ARG_DEPS})
  set_target_properties(infllm_${folder} PROPERTIES POSITION_INDEPENDENT_CODE ON
                        CUDA_SEPARABLE_COMPILATION OFF)
  infllm_compile_options(infllm_${folder})
endfunction()

function(infllm_add_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  infllm_compile_options(${name})
endfunction()

function(infllm_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  infllm_compile_options(${name})
  add_test(NAME ${name} COMMAND ${name} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}")
endfunction()
