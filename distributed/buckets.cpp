#include "distributed/buckets.h"

#include "core/error.h"

namespace infllm::distributed {
namespace {

size_t round_up(size_t value, size_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

}  // namespace

std::vector<GradientBucket> plan_gradient_buckets(const std::vector<size_t>& param_bytes,
                                                  size_t bucket_bytes, size_t alignment) {
  INFLLM_CHECK(bucket_bytes > 0, "plan_gradient_buckets: bucket size must be positive; set ",
               "distributed.bucket_mb to a positive value");
  INFLLM_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0,
               "plan_gradient_buckets: alignment ", alignment, " is not a power of two");
  std::vector<GradientBucket> buckets;
  GradientBucket current;
  auto close_current = [&] {
    if (!current.params.empty()) buckets.push_back(std::move(current));
    current = GradientBucket{};
  };
  for (size_t i = param_bytes.size(); i-- > 0;) {
    size_t offset = round_up(current.bytes, alignment);
    if (!current.params.empty() && offset + param_bytes[i] > bucket_bytes) {
      close_current();
      offset = 0;
    }
    current.params.push_back(i);
    current.offsets.push_back(offset);
    current.bytes = offset + param_bytes[i];
    if (current.bytes >= bucket_bytes) close_current();
  }
  close_current();
  return buckets;
}

}  // namespace infllm::distributed
