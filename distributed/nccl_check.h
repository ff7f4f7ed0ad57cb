// Checks every NCCL call. Communicators here are non-blocking, so ncclInProgress is not an
// error: the caller waits for it through ncclCommGetAsyncError.
#pragma once

#include <nccl.h>

#include "core/error.h"

namespace infllm::distributed {

[[noreturn]] inline void nccl_fail(ncclResult_t result, const char* call, const char* file,
                                   int line) {
  fail("NCCL error ", ncclGetErrorString(result), " (", ncclGetLastError(nullptr), ") in ", call,
       " at ", file, ":", line);
}

}  // namespace infllm::distributed

#define NCCL_CHECK(call)                                                    \
  do {                                                                      \
    ncclResult_t result_ = (call);                                          \
    if (result_ != ncclSuccess && result_ != ncclInProgress)                \
      ::infllm::distributed::nccl_fail(result_, #call, __FILE__, __LINE__); \
  } while (0)
