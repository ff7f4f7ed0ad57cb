// Fills of a contiguous tensor: a constant, an arithmetic range, Philox random draws
// (element i uses counter offset + i; see core/rng.h).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace infllm {

enum class RandomKind { uniform, normal };

struct RandomArgs {
  RandomKind kind = RandomKind::uniform;
  uint64_t seed = 0;
  uint64_t offset = 0;
  double a = 0.0;  // uniform: low;  normal: mean
  double b = 1.0;  // uniform: high; normal: std
};

namespace cpu {
void fill(Tensor& out, double value);
void arange(Tensor& out, double start, double step);
void random(Tensor& out, const RandomArgs& args);
}  // namespace cpu
namespace cuda {
void fill(Tensor& out, double value);
void arange(Tensor& out, double start, double step);
void random(Tensor& out, const RandomArgs& args);
}  // namespace cuda

}  // namespace infllm
