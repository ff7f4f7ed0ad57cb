#include "distributed/launch_env.h"

#include <charconv>
#include <cstdlib>

#include "core/error.h"

namespace infllm::distributed {
namespace {

// A variable that must be present, parsed as a whole base-10 integer.
long long required_integer(const EnvReader& env, const std::string& name, const char* meaning) {
  std::optional<std::string> text = env(name);
  if (!text) fail("launch env: ", name, " is not set; it must hold ", meaning);
  long long value = 0;
  const char* first = text->data();
  const char* last = first + text->size();
  auto [end, err] = std::from_chars(first, last, value);
  if (text->empty() || err != std::errc() || end != last)
    fail("launch env: ", name, "='", *text, "' is not an integer; it must hold ", meaning);
  return value;
}

long long integer_or(const EnvReader& env, const std::string& name, long long fallback,
                     const char* meaning) {
  return env(name) ? required_integer(env, name, meaning) : fallback;
}

// Checks the ranks against each other and the world; names the variables that carried them.
void check_ranks(const LaunchEnv& out, const std::string& rank_var, const std::string& world_var,
                 const std::string& local_var) {
  if (out.world_size < 1)
    fail("launch env: ", world_var, "=", out.world_size, " must be at least 1");
  if (out.rank < 0 || out.rank >= out.world_size)
    fail("launch env: ", rank_var, "=", out.rank, " is outside [0, ", world_var, "=",
         out.world_size, ")");
  if (out.local_rank < 0 || out.local_rank >= out.world_size)
    fail("launch env: ", local_var, "=", out.local_rank, " is outside [0, ", world_var, "=",
         out.world_size, ")");
}

void check_port(long long port, const std::string& source) {
  if (port < 1 || port > 65535)
    fail("launch env: ", source, "=", port, " is not a TCP port; use one in [1, 65535]");
}

// MASTER_ADDR/MASTER_PORT for a job of several processes; a single one needs neither.
void read_master(const EnvReader& env, LaunchEnv& out) {
  if (out.world_size == 1 && !env("MASTER_ADDR")) return;
  std::optional<std::string> addr = env("MASTER_ADDR");
  if (!addr || addr->empty())
    fail("launch env: MASTER_ADDR is not set but the world has ", out.world_size,
         " processes; set it to the host name or IP address of rank 0");
  out.master_addr = *addr;
  long long port = required_integer(env, "MASTER_PORT", "rank 0's free TCP port, e.g. 29500");
  check_port(port, "MASTER_PORT");
  out.master_port = static_cast<int>(port);
}

LaunchEnv from_torchrun(const EnvReader& env) {
  LaunchEnv out;
  out.launcher = "torchrun";
  out.rank = static_cast<int>(required_integer(env, "RANK", "this process's rank"));
  out.world_size = static_cast<int>(required_integer(env, "WORLD_SIZE", "the number of processes"));
  out.local_rank = static_cast<int>(
      out.world_size == 1
          ? integer_or(env, "LOCAL_RANK", 0, "this process's index on its node")
          : required_integer(env, "LOCAL_RANK", "this process's index on its node"));
  check_ranks(out, "RANK", "WORLD_SIZE", "LOCAL_RANK");
  read_master(env, out);
  return out;
}

LaunchEnv from_openmpi(const EnvReader& env) {
  LaunchEnv out;
  out.launcher = "openmpi";
  out.rank = static_cast<int>(required_integer(env, "OMPI_COMM_WORLD_RANK", "the MPI rank"));
  out.world_size =
      static_cast<int>(required_integer(env, "OMPI_COMM_WORLD_SIZE", "the MPI world size"));
  out.local_rank = static_cast<int>(
      required_integer(env, "OMPI_COMM_WORLD_LOCAL_RANK", "the MPI rank on this node"));
  check_ranks(out, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK");
  read_master(env, out);
  return out;
}

// Rank 0 of a step runs on the first node of the step's node list.
std::string slurm_first_host(const EnvReader& env) {
  for (const char* name : {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"}) {
    std::optional<std::string> list = env(name);
    if (!list || list->empty()) continue;
    std::vector<std::string> hosts = expand_slurm_nodelist(*list);
    if (hosts.empty()) fail("launch env: ", name, "='", *list, "' names no host");
    return hosts.front();
  }
  fail(
      "launch env: neither MASTER_ADDR nor SLURM_JOB_NODELIST/SLURM_NODELIST is set; run under "
      "srun or set MASTER_ADDR to rank 0's host");
}

LaunchEnv from_slurm(const EnvReader& env) {
  LaunchEnv out;
  out.launcher = "slurm";
  out.rank = static_cast<int>(required_integer(env, "SLURM_PROCID", "the Slurm task rank"));
  out.world_size = static_cast<int>(
      required_integer(env, "SLURM_NTASKS", "the number of Slurm tasks (srun --ntasks)"));
  out.local_rank =
      static_cast<int>(required_integer(env, "SLURM_LOCALID", "the Slurm task index on this node"));
  check_ranks(out, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID");
  if (out.world_size == 1) return out;
  std::optional<std::string> addr = env("MASTER_ADDR");
  out.master_addr = addr && !addr->empty() ? *addr : slurm_first_host(env);
  if (env("MASTER_PORT")) {
    long long port = required_integer(env, "MASTER_PORT", "rank 0's free TCP port");
    check_port(port, "MASTER_PORT");
    out.master_port = static_cast<int>(port);
  } else {
    long long job_id = required_integer(env, "SLURM_JOB_ID",
                                        "the Slurm job id (or set MASTER_PORT to choose the port)");
    if (job_id < 0) fail("launch env: SLURM_JOB_ID=", job_id, " is negative");
    out.master_port = slurm_default_port(job_id);
  }
  return out;
}

// Splits at commas that are not inside brackets.
std::vector<std::string> split_top_level(const std::string& text, const std::string& whole) {
  std::vector<std::string> parts;
  std::string current;
  int depth = 0;
  for (char c : text) {
    if (c == '[') ++depth;
    if (c == ']' && --depth < 0) fail("slurm nodelist '", whole, "': unmatched ']'");
    if (c == ',' && depth == 0) {
      parts.push_back(current);
      current.clear();
    } else {
      current += c;
    }
  }
  if (depth != 0) fail("slurm nodelist '", whole, "': unmatched '['");
  parts.push_back(current);
  return parts;
}

long long parse_index(const std::string& text, const std::string& whole) {
  long long value = 0;
  auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || err != std::errc() || end != text.data() + text.size() || value < 0)
    fail("slurm nodelist '", whole, "': '", text, "' is not a node number");
  return value;
}

// "01-04" -> 01 02 03 04 (width of the lower bound kept), "7" -> 7.
std::vector<std::string> expand_range(const std::string& range, const std::string& whole) {
  size_t dash = range.find('-');
  std::string low_text = range.substr(0, dash);
  long long low = parse_index(low_text, whole);
  long long high = dash == std::string::npos ? low : parse_index(range.substr(dash + 1), whole);
  if (high < low) fail("slurm nodelist '", whole, "': range '", range, "' runs backwards");
  if (high - low > 100000) fail("slurm nodelist '", whole, "': range '", range, "' is too large");
  std::vector<std::string> out;
  for (long long i = low; i <= high; ++i) {
    std::string digits = std::to_string(i);
    if (digits.size() < low_text.size()) digits.insert(0, low_text.size() - digits.size(), '0');
    out.push_back(digits);
  }
  return out;
}

// One host pattern: expands its first bracket group, then recurses on the rest.
void expand_pattern(const std::string& pattern, const std::string& whole,
                    std::vector<std::string>& out) {
  size_t open = pattern.find('[');
  if (open == std::string::npos) {
    if (pattern.empty()) fail("slurm nodelist '", whole, "': empty host name");
    out.push_back(pattern);
    return;
  }
  size_t close = pattern.find(']', open);
  std::string prefix = pattern.substr(0, open);
  std::string rest = pattern.substr(close + 1);
  for (const std::string& range :
       split_top_level(pattern.substr(open + 1, close - open - 1), whole))
    for (const std::string& index : expand_range(range, whole))
      expand_pattern(prefix + index + rest, whole, out);
}

}  // namespace

EnvReader process_env_reader() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

LaunchEnv detect_launch_env(const EnvReader& env) {
  if (env("RANK") || env("WORLD_SIZE")) return from_torchrun(env);
  if (env("OMPI_COMM_WORLD_RANK") || env("OMPI_COMM_WORLD_SIZE")) return from_openmpi(env);
  if (env("SLURM_PROCID")) return from_slurm(env);
  LaunchEnv single;
  single.launcher = "single";
  return single;
}

std::vector<std::string> expand_slurm_nodelist(const std::string& nodelist) {
  std::vector<std::string> hosts;
  for (const std::string& pattern : split_top_level(nodelist, nodelist))
    expand_pattern(pattern, nodelist, hosts);
  return hosts;
}

int slurm_default_port(long long job_id) {
  return 10000 + static_cast<int>(job_id % 20000);
}

}  // namespace infllm::distributed
