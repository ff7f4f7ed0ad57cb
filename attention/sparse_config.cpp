// The rules of a SparseConfig, written once: the recipe loader (attention.* keys), the attention
// op and the CUDA entry points all check through check_sparse_config.
#include <string>

#include "attention/infllm_v2.h"

namespace infllm::attention {
namespace {

void positive(const ConfigCheck& check, std::string_view field, int value) {
  check.require(value > 0, {field}, "must be positive, got " + std::to_string(value), "set ",
                check.key(field), " to a value greater than 0");
}

void non_negative(const ConfigCheck& check, std::string_view field, int value) {
  check.require(value >= 0, {field}, "must be 0 or more, got " + std::to_string(value), "set ",
                check.key(field), " to a value of 0 or more");
}

// "40 is not a multiple of attention.kernel_stride = 16"
std::string not_multiple(const ConfigCheck& check, int value, std::string_view of, int of_value) {
  return std::to_string(value) + " is not a multiple of " + check.key(of) + " = " +
         std::to_string(of_value);
}

}  // namespace

void check_sparse_config(const SparseConfig& c, const ConfigCheck& check) {
  positive(check, "kernel_size", c.kernel_size);
  positive(check, "kernel_stride", c.kernel_stride);
  positive(check, "block_size", c.block_size);
  non_negative(check, "init_blocks", c.init_blocks);
  positive(check, "window_size", c.window_size);
  positive(check, "topk", c.topk);
  non_negative(check, "dense_len", c.dense_len);  // 0: auto mode is sparse at every length
  positive(check, "lse_stride", c.lse_stride);    // 1: the exact softmax normalizer
  check.require(c.kernel_size % c.kernel_stride == 0, {"kernel_size", "kernel_stride"},
                not_multiple(check, c.kernel_size, "kernel_stride", c.kernel_stride),
                "use e.g. kernel_size 32 with kernel_stride 16");
  check.require(
      c.block_size % c.kernel_stride == 0, {"block_size", "kernel_stride"},
      not_multiple(check, c.block_size, "kernel_stride", c.kernel_stride),
      "block scores max-pool whole kernels: use e.g. block_size 64 with kernel_stride 16");
  check.require(c.window_size % c.block_size == 0, {"window_size", "block_size"},
                not_multiple(check, c.window_size, "block_size", c.block_size),
                "the local window is whole blocks: use e.g. window_size 2048 with block_size 64");
  const int forced = c.init_blocks + c.local_blocks();
  check.require(c.topk >= forced, {"topk", "window_size", "block_size", "init_blocks"},
                std::to_string(c.topk) + " is less than init_blocks + window_size / block_size = " +
                    std::to_string(forced) + " (topk counts the forced blocks)",
                "raise ", check.key("topk"), " to at least ", forced, " or shrink ",
                check.key("window_size"));
}

void check_sparse_config(const char* op, const SparseConfig& cfg) {
  check_sparse_config(cfg, ConfigCheck(op));
}

}  // namespace infllm::attention
