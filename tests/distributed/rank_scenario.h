// Multi-GPU tests whose ranks are copies of the test binary: a launcher-side test calls
// run_rank_scenario(), which starts N ranks through launch_local, each running one gtest (the
// "rank test") that reads its scenario from the environment. Outside such a launch the rank
// test skips itself.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>

#include "distributed/launcher.h"
#include "layers/model_config.h"

namespace infllm::distributed::testing {

inline std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

// A small model whose shapes the CUDA kernels take (head_dim 64), for the multi-GPU tests.
inline ModelConfig small_gpu_model() {
  ModelConfig config;
  config.vocab_size = 96;
  config.d_model = 128;
  config.n_layers = 2;
  config.n_heads = 2;
  config.n_kv_heads = 1;
  config.head_dim = 64;
  config.ffn_hidden = 256;
  return config;
}

// The scenario this process runs as a rank, or "" when it was not started as one.
inline std::string rank_scenario() {
  return env_or_empty("RANK").empty() ? "" : env_or_empty("INFLLM_RANK_SCENARIO");
}

// The seed every rank of one launch shares (fresh per launch).
inline uint64_t rank_seed() {
  return std::stoull(env_or_empty("INFLLM_RANK_SEED"));
}

// Runs the gtest `rank_test` ("Suite.Name") of this binary as nproc ranks with `scenario`;
// returns the launcher's code (0: every rank passed) and appends its messages to *report.
inline int run_rank_scenario(const std::string& rank_test, const std::string& scenario, int nproc,
                             std::string* report) {
  ::setenv("INFLLM_RANK_SCENARIO", scenario.c_str(), 1);
  ::setenv("INFLLM_RANK_SEED", std::to_string(std::random_device{}() % 100000).c_str(), 1);
  LocalLaunchOptions options;
  options.report = [report](const std::string& line) {
    std::cerr << line << std::endl;
    *report += line + "\n";
  };
  const std::string self = std::filesystem::read_symlink("/proc/self/exe");
  const int code = launch_local(nproc, {self, "--gtest_filter=" + rank_test}, options);
  ::unsetenv("INFLLM_RANK_SCENARIO");
  return code;
}

}  // namespace infllm::distributed::testing
