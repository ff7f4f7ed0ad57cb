// Running the real `infllm` executable from tests (INFLLM_BINARY, set by CMake): its exit code
// and output, fresh run folders, and what a run folder holds.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "train/metrics_log.h"

namespace infllm::train::testing {

struct Outcome {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// `infllm ARGS` through the shell (ARGS is shell text); a signal death reads as 128 + signal.
inline Outcome run(const std::string& args) {
  std::string command = std::string(INFLLM_BINARY) + " " + args + " 2>&1";
  Outcome outcome;
  FILE* pipe = popen(command.c_str(), "r");
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe))
    outcome.output.append(buffer.data(), n);
  int status = pclose(pipe);
  outcome.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return outcome;
}

// Starts `infllm ARGS...` without a shell, its output going to `log`; returns the pid.
inline pid_t start(const std::vector<std::string>& args, const std::string& log = "/dev/null") {
  std::vector<std::string> all = {INFLLM_BINARY};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : all) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t child = fork();
  if (child == 0) {
    if (FILE* out = std::freopen(log.c_str(), "w", stdout)) dup2(fileno(out), 2);
    execv(INFLLM_BINARY, argv.data());
    _exit(127);
  }
  return child;
}

// A run folder under /tmp/infllm-tests that does not exist yet.
inline std::string fresh_dir(const std::string& name) {
  std::string dir = "/tmp/infllm-tests/" + name + "-" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  return dir;
}

// Values of `key` in the lines of a run's metrics.jsonl, in order.
inline std::vector<double> logged(const std::string& dir, const std::string& key) {
  std::vector<double> values;
  std::ifstream in(dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto parsed = parse_json_line(line);
    if (!parsed) continue;
    if (const MetricValue* v = parsed->find(key)) values.push_back(std::get<double>(*v));
  }
  return values;
}

inline std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Every regular file under `dir` (relative path -> bytes), except the names in `skip`.
inline std::map<std::string, std::string> snapshot(const std::string& dir,
                                                   const std::vector<std::string>& skip = {}) {
  std::map<std::string, std::string> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = std::filesystem::relative(entry.path(), dir).string();
    if (std::find(skip.begin(), skip.end(), name) != skip.end()) continue;
    files[name] = read_bytes(entry.path());
  }
  return files;
}

}  // namespace infllm::train::testing
