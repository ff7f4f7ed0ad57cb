// Groups gradients into buckets for the overlapped all-reduce of data-parallel training.
// Gradients become ready roughly in reverse registration order (backward runs last layer
// first), so buckets are filled from the last parameter backwards: the first bucket is the
// first one complete, and its all-reduce overlaps the rest of backward.
#pragma once

#include <cstddef>
#include <vector>

namespace infllm::distributed {

struct GradientBucket {
  std::vector<size_t> params;   // parameter indices, descending (the order they become ready)
  std::vector<size_t> offsets;  // byte offset of each parameter in the bucket's flat buffer
  size_t bytes = 0;             // size of the flat buffer, alignment padding included
};

// param_bytes: gradient sizes (one dtype) in registration order. Each parameter lands in
// exactly one bucket; a bucket is closed once the next parameter would push it past
// bucket_bytes, and a parameter at least bucket_bytes large gets a bucket of its own. Offsets
// are multiples of `alignment` (a power of two) so kernels may use wide loads.
std::vector<GradientBucket> plan_gradient_buckets(const std::vector<size_t>& param_bytes,
                                                  size_t bucket_bytes, size_t alignment = 256);

}  // namespace infllm::distributed
