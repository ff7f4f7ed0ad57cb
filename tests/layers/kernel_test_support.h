// Helpers for the pointer-level kernel tests (tests/layers/test_*_kernels.cpp,
// tests/optim/test_adamw_kernels.cpp): fresh random inputs, bf16 rounding, relative errors,
// finite differences, and device buffers for the CUDA-vs-CPU checks.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "core/bf16.h"
#include "core/error.h"
#include "tests/device_memory.h"
#include "tests/test_util.h"

namespace infllm::kernel_test {

// A new seed per call, printed by the tests (SCOPED_TRACE) so a failure can be replayed.
inline uint64_t fresh_seed() {
  static std::random_device device;
  return (uint64_t(device()) << 32) ^ device();
}

inline std::vector<double> random_uniform(size_t n, double low, double high, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(low, high);
  std::vector<double> out(n);
  for (double& x : out) x = dist(gen);
  return out;
}

inline std::vector<double> random_normal(size_t n, double std, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> dist(0.0, std);
  std::vector<double> out(n);
  for (double& x : out) x = dist(gen);
  return out;
}

using testing::rel_error;  // |out - ref| / |ref| in the L2 norm; infinite for a NaN or Inf

template <class To, class From>
std::vector<To> convert(const std::vector<From>& in) {
  return std::vector<To>(in.begin(), in.end());
}

inline std::vector<uint16_t> to_bf16(const std::vector<double>& in) {
  std::vector<uint16_t> out(in.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = float_to_bf16(float(in[i])).bits;
  return out;
}

inline std::vector<double> from_bf16(const std::vector<uint16_t>& in) {
  std::vector<double> out(in.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = bf16_to_float(bf16{in[i]});
  return out;
}

// Values exactly representable in bf16, so the CPU reference sees the GPU's inputs.
inline std::vector<double> round_to_bf16(const std::vector<double>& in) {
  return from_bf16(to_bf16(in));
}

// d loss / d x[i] by central differences, for every i; x is restored afterwards.
inline std::vector<double> finite_difference_gradient(std::vector<double>& x,
                                                      const std::function<double()>& loss,
                                                      double h = 1e-6) {
  std::vector<double> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double plus = loss();
    x[i] = saved - h;
    const double minus = loss();
    x[i] = saved;
    grad[i] = (plus - minus) / (2.0 * h);
  }
  return grad;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

// A device array filled from and read back to host vectors.
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n)
      : n_(n), ptr_(static_cast<T*>(testing::device_malloc(n * sizeof(T) + 16))) {}
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() { testing::device_free(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() { return ptr_; }
  void upload(const std::vector<T>& host) {
    testing::copy_to_device(ptr_, host.data(), n_ * sizeof(T));
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    testing::device_synchronize();
    testing::copy_to_host(host.data(), ptr_, n_ * sizeof(T));
    return host;
  }
  // Fills with 0xFF bytes (NaN for f32 and bf16), so an element the kernel skips shows up.
  void poison() { testing::device_memset(ptr_, 0xFF, n_ * sizeof(T)); }

 private:
  size_t n_;
  T* ptr_ = nullptr;
};

}  // namespace infllm::kernel_test
