#include "train/cli_args.h"

#include "core/error.h"
#include "distributed/launcher.h"

namespace infllm::train {

std::string CliArgs::get(const std::string& name, const std::string& fallback) const {
  auto it = options.find(name);
  return it == options.end() ? fallback : it->second;
}

long long CliArgs::get_int(const std::string& name, long long fallback) const {
  auto it = options.find(name);
  if (it == options.end()) return fallback;
  try {
    size_t used = 0;
    long long value = std::stoll(it->second, &used);
    if (used == it->second.size()) return value;
  } catch (const std::exception&) {
  }
  fail(name, ": expected an integer, got \"", it->second, "\"");
}

double CliArgs::get_double(const std::string& name, double fallback) const {
  auto it = options.find(name);
  if (it == options.end()) return fallback;
  try {
    size_t used = 0;
    double value = std::stod(it->second, &used);
    if (used == it->second.size()) return value;
  } catch (const std::exception&) {
  }
  fail(name, ": expected a number, got \"", it->second, "\"");
}

CliArgs parse_cli(const std::string& command, int argc, char** argv,
                  const std::set<std::string>& valued, const std::set<std::string>& switches) {
  CliArgs args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      args.switches.insert("--help");
    } else if (arg.rfind("--", 0) == 0) {
      std::string name = arg, value;
      bool inline_value = false;
      if (auto eq = arg.find('='); eq != std::string::npos) {
        name = arg.substr(0, eq);
        value = arg.substr(eq + 1);
        inline_value = true;
      }
      if (switches.count(name) && !inline_value) {
        args.switches.insert(name);
      } else if (valued.count(name)) {
        if (!inline_value) {
          INFLLM_CHECK(i + 1 < argc, "infllm ", command, ": ", name, " needs a value");
          value = argv[++i];
        }
        args.options[name] = value;
      } else {
        std::string known;
        for (const auto& v : valued) known += " " + v;
        for (const auto& s : switches) known += " " + s;
        fail("infllm ", command, ": unknown option ", name, " (known:", known, "; see infllm ",
             command, " --help)");
      }
    } else {
      args.positionals.push_back(arg);
    }
  }
  return args;
}

int launch_local_ranks(const std::string& command, int argc, char** argv, int nproc) {
  std::vector<std::string> child = {"/proc/self/exe", command};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--nproc") {
      ++i;
    } else if (arg.rfind("--nproc=", 0) != 0) {
      child.push_back(arg);
    }
  }
  return distributed::launch_local(nproc, child);
}

}  // namespace infllm::train
