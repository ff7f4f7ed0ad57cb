// Shared helpers for the test suites: fresh random inputs, f64 comparisons, GPU detection,
// expected errors. Folder-specific helpers (tests/data/test_util.h, tests/layers/
// kernel_test_support.h) build on this header rather than repeat it.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "core/device.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"

namespace infllm::testing {

// Each call draws from a new Philox stream, so no two tests see the same numbers.
inline uint64_t fresh_seed() {
  static std::atomic<uint64_t> counter{0x5eed};
  return counter++ * 0x9E3779B97F4A7C15ull;
}

inline Tensor random_normal(const Shape& shape, DType dtype = DType::f32,
                            Device device = Device::cpu(), double std = 1.0) {
  return ops::normal(shape, fresh_seed(), 0, 0.0, std, dtype, device);
}

inline Tensor random_uniform(const Shape& shape, double low, double high, DType dtype = DType::f32,
                             Device device = Device::cpu()) {
  return ops::uniform(shape, fresh_seed(), 0, low, high, dtype, device);
}

inline std::vector<double> as_f64(const Tensor& t) {
  return ops::cast(t.to(Device::cpu()).contiguous(), DType::f64).to_vector<double>();
}

// |out - ref| / |ref| in the L2 norm: the measure every numerical test bounds.
inline double rel_error(const std::vector<double>& out, const std::vector<double>& ref) {
  EXPECT_EQ(out.size(), ref.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < out.size() && i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    diff += (out[i] - ref[i]) * (out[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-300);
}

inline double rel_error(const Tensor& out, const std::vector<double>& ref) {
  return rel_error(as_f64(out), ref);
}

// True when this build has the CUDA backend and the machine a usable GPU (no driver: false).
inline bool has_gpu() {
  return cuda_device_count() > 0;
}

#define INFLLM_REQUIRE_GPU()                                 \
  if (!::infllm::testing::has_gpu())                         \
  GTEST_SKIP() << "no GPU on this machine (CUDA tests need " \
                  "one)"

// Fails the test when a CUDA runtime call does not return cudaSuccess (core/cuda_check.h's
// CUDA_CHECK throws instead). Usable where the file includes <cuda_runtime.h>.
#define CHECK_CUDA(call) ASSERT_EQ((call), cudaSuccess) << #call

// The message of the infllm::Error that `action` throws; fails the test (and returns "") when it
// throws none.
template <class Action>
std::string error_of(Action&& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected an infllm::Error";
  return "";
}

// Runs `action`, which must throw an infllm::Error whose message contains every one of `parts`.
template <class Action>
void expect_error(Action&& action, std::initializer_list<std::string_view> parts) {
  const std::string message = error_of(action);
  for (std::string_view part : parts) {
    EXPECT_NE(message.find(part), std::string::npos)
        << "message lacks \"" << part << "\":\n  " << message;
  }
}

}  // namespace infllm::testing
