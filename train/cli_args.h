// A small command-line parser for the subcommands: positionals, `--flag value` options and
// boolean `--switch`es; unknown options are errors that list the known ones. Numbers are read
// only through the checked getters, which refuse trailing junk, NaN, infinities and values
// outside the range the option allows, naming the option and the range.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace infllm::train {

// The values an integer option accepts, both ends included.
struct IntRange {
  int64_t min = 0;
  int64_t max = std::numeric_limits<int64_t>::max();
};

// The values a real option accepts; `min_open` excludes min itself (e.g. "greater than 0").
struct RealRange {
  double min = 0;
  double max = std::numeric_limits<double>::max();
  bool min_open = false;
  bool max_open = false;
};

struct CliArgs {
  std::string command;  // "train", "eval", ...: names the command in messages
  std::vector<std::string> positionals;
  std::map<std::string, std::string> options;  // "--tokens" -> "200"
  std::set<std::string> switches;              // "--resume"

  bool has(const std::string& name) const { return switches.count(name) || options.count(name); }
  std::string get(const std::string& name, const std::string& fallback) const;
  // The option's value, or `fallback` when it is absent; a value that is not a number in
  // `range` is an infllm::Error naming the option, the value and the range.
  int64_t get_int(const std::string& name, int64_t fallback, IntRange range) const;
  double get_real(const std::string& name, double fallback, RealRange range) const;
};

// `valued` options take a value; `switches` don't. "--help"/"-h" is always a switch.
CliArgs parse_cli(const std::string& command, int argc, char** argv,
                  const std::set<std::string>& valued, const std::set<std::string>& switches);

// `infllm COMMAND ... --nproc N`: runs this executable again with the same arguments minus
// --nproc as N local ranks, one per GPU (distributed/launcher.h), and returns their exit code.
int launch_local_ranks(const std::string& command, int argc, char** argv, int nproc);

// The largest --nproc accepted: more local ranks than any node has GPUs is a typo.
inline constexpr int64_t kMaxLocalRanks = 1024;

}  // namespace infllm::train
