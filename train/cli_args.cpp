#include "train/cli_args.h"

#include <charconv>
#include <cmath>
#include <sstream>

#include "core/error.h"
#include "distributed/launcher.h"

namespace infllm::train {

std::string CliArgs::get(const std::string& name, const std::string& fallback) const {
  auto it = options.find(name);
  return it == options.end() ? fallback : it->second;
}

namespace {

std::string format_real(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

std::string describe(const IntRange& range) {
  if (range.max == std::numeric_limits<int64_t>::max())
    return "an integer >= " + std::to_string(range.min);
  return "an integer in [" + std::to_string(range.min) + ", " + std::to_string(range.max) + "]";
}

std::string describe(const RealRange& range) {
  const bool unbounded = range.max == std::numeric_limits<double>::max();
  if (unbounded)
    return std::string("a finite number ") + (range.min_open ? "> " : ">= ") +
           format_real(range.min);
  return std::string("a number in ") + (range.min_open ? "(" : "[") + format_real(range.min) +
         ", " + format_real(range.max) + (range.max_open ? ")" : "]");
}

}  // namespace

int64_t CliArgs::get_int(const std::string& name, int64_t fallback, IntRange range) const {
  auto it = options.find(name);
  if (it == options.end()) return fallback;
  const std::string& text = it->second;
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  const bool parsed = !text.empty() && error == std::errc() && end == text.data() + text.size();
  INFLLM_CHECK(parsed && value >= range.min && value <= range.max, "infllm ", command, ": ", name,
               " \"", text, "\" is not ", describe(range),
               error == std::errc::result_out_of_range ? " (too large)" : "");
  return value;
}

double CliArgs::get_real(const std::string& name, double fallback, RealRange range) const {
  auto it = options.find(name);
  if (it == options.end()) return fallback;
  const std::string& text = it->second;
  double value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  const bool parsed = !text.empty() && error == std::errc() && end == text.data() + text.size();
  // NaN fails every comparison below, so it is refused with the range.
  const bool ok = parsed && std::isfinite(value) &&
                  (range.min_open ? value > range.min : value >= range.min) &&
                  (range.max_open ? value < range.max : value <= range.max);
  INFLLM_CHECK(ok, "infllm ", command, ": ", name, " \"", text, "\" is not ", describe(range));
  return value;
}

CliArgs parse_cli(const std::string& command, int argc, char** argv,
                  const std::set<std::string>& valued, const std::set<std::string>& switches) {
  CliArgs args;
  args.command = command;
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
