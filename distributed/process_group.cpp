#include "distributed/process_group.h"

#include "core/error.h"

namespace infllm::distributed {

size_t comm_dtype_bytes(CommDType dtype) {
  switch (dtype) {
    case CommDType::f32:
      return 4;
    case CommDType::bf16:
      return 2;
    case CommDType::i32:
      return 4;
    case CommDType::i64:
      return 8;
    case CommDType::f64:
      return 8;
  }
  fail("comm_dtype_bytes: unknown CommDType ", static_cast<int>(dtype));
}

const char* comm_dtype_name(CommDType dtype) {
  switch (dtype) {
    case CommDType::f32:
      return "f32";
    case CommDType::bf16:
      return "bf16";
    case CommDType::i32:
      return "i32";
    case CommDType::i64:
      return "i64";
    case CommDType::f64:
      return "f64";
  }
  fail("comm_dtype_name: unknown CommDType ", static_cast<int>(dtype));
}

}  // namespace infllm::distributed
