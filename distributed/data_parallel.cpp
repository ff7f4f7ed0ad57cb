#include "distributed/data_parallel.h"

#include <algorithm>

#include "core/error.h"
#include "distributed/buckets.h"

namespace infllm::distributed {

GradientLayout plan_gradient_layout(const std::vector<size_t>& param_elements, size_t bucket_bytes,
                                    GradientReduction reduction, int world_size) {
  INFLLM_CHECK(world_size >= 1, "plan_gradient_layout: world size ", world_size, " must be >= 1");
  const bool scatter = reduction == GradientReduction::reduce_scatter;
  std::vector<size_t> param_bytes;
  for (size_t n : param_elements) param_bytes.push_back(n * sizeof(float));
  // reduce_scatter packs parameters (alignment of one float) so a bucket is one flat ZeRO space.
  const std::vector<GradientBucket> buckets =
      plan_gradient_buckets(param_bytes, bucket_bytes, scatter ? sizeof(float) : 256);

  GradientLayout layout;
  layout.reduction = reduction;
  layout.world_size = world_size;
  layout.bucket_of.assign(param_elements.size(), 0);
  layout.offset_of.assign(param_elements.size(), 0);
  for (const GradientBucket& bucket : buckets) {
    BucketLayout out;
    out.params = bucket.params;
    if (scatter) {
      std::vector<size_t> elements;
      for (size_t p : bucket.params) elements.push_back(param_elements[p]);
      out.shards = plan_zero_shards(elements, world_size, 16);
      out.offsets = out.shards.param_offsets;
      out.elements = out.shards.padded_elements();
    } else {
      for (size_t offset : bucket.offsets) out.offsets.push_back(offset / sizeof(float));
      out.elements = bucket.bytes / sizeof(float);
    }
    for (size_t i = 0; i < out.params.size(); ++i) {
      layout.bucket_of[out.params[i]] = layout.buckets.size();
      layout.offset_of[out.params[i]] = out.offsets[i];
    }
    layout.buckets.push_back(std::move(out));
  }
  return layout;
}

BucketReadiness::BucketReadiness(const GradientLayout& layout, std::vector<std::string> param_names)
    : bucket_of_(layout.bucket_of), names_(std::move(param_names)) {
  INFLLM_CHECK(names_.size() == bucket_of_.size(), "BucketReadiness: ", names_.size(),
               " names for ", bucket_of_.size(), " parameters");
  for (const BucketLayout& bucket : layout.buckets) bucket_params_.push_back(bucket.params);
  expected_.assign(names_.size(), 0);
  seen_.assign(names_.size(), 0);
  missing_.assign(bucket_params_.size(), 0);
}

void BucketReadiness::begin() {
  std::fill(seen_.begin(), seen_.end(), 0);
  next_release_ = 0;
  released_during_backward_ = 0;
  for (size_t b = 0; b < bucket_params_.size(); ++b) {
    missing_[b] = 0;
    for (size_t p : bucket_params_[b]) missing_[b] += expected_[p] > 0 ? 1 : 0;
  }
}

std::vector<size_t> BucketReadiness::grad_accumulated(size_t param) {
  INFLLM_CHECK(param < seen_.size(), "BucketReadiness: parameter index ", param, " out of ",
               seen_.size());
  ++seen_[param];
  if (!learned_) return {};
  const size_t bucket = bucket_of_[param];
  if (bucket < next_release_)
    fail("DataParallel: parameter '", names_[param], "' received gradient ", seen_[param],
         " of this backward after its bucket's reduction had started (the first synced backward "
         "delivered ",
         expected_[param],
         "); the backward graph changed between steps. Call "
         "DataParallel::relearn_gradient_counts() after changing the model's graph (e.g. its "
         "attention schedule)");
  if (seen_[param] == expected_[param]) --missing_[bucket];
  std::vector<size_t> released = release_ready();
  released_during_backward_ += released.size();
  return released;
}

std::vector<size_t> BucketReadiness::release_ready() {
  std::vector<size_t> released;
  while (next_release_ < bucket_params_.size() && missing_[next_release_] == 0)
    released.push_back(next_release_++);
  return released;
}

std::vector<size_t> BucketReadiness::finish() {
  std::vector<size_t> rest;
  while (next_release_ < bucket_params_.size()) rest.push_back(next_release_++);
  // The counts of this backward are what the next one will deliver (they only change when
  // the graph does; fewer than learned was still reduced correctly, at the end).
  expected_ = seen_;
  learned_ = true;
  return rest;
}

}  // namespace infllm::distributed
