// A small command-line parser for the subcommands: positionals, `--flag value` options and
// boolean `--switch`es; unknown options are errors that list the known ones.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

namespace infllm::train {

struct CliArgs {
  std::vector<std::string> positionals;
  std::map<std::string, std::string> options;  // "--tokens" -> "200"
  std::set<std::string> switches;              // "--resume"

  bool has(const std::string& name) const { return switches.count(name) || options.count(name); }
  std::string get(const std::string& name, const std::string& fallback) const;
  long long get_int(const std::string& name, long long fallback) const;
  double get_double(const std::string& name, double fallback) const;
};

// `valued` options take a value; `switches` don't. "--help"/"-h" is always a switch.
CliArgs parse_cli(const std::string& command, int argc, char** argv,
                  const std::set<std::string>& valued, const std::set<std::string>& switches);

// `infllm COMMAND ... --nproc N`: runs this executable again with the same arguments minus
// --nproc as N local ranks, one per GPU (distributed/launcher.h), and returns their exit code.
int launch_local_ranks(const std::string& command, int argc, char** argv, int nproc);

}  // namespace infllm::train
