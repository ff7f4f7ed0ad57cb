#include "distributed/launcher.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "distributed/tcp_socket.h"

extern char** environ;

namespace infllm::distributed {
namespace {

constexpr auto kPollPeriod = std::chrono::milliseconds(20);

volatile std::sig_atomic_t g_received_signal = 0;
void remember_signal(int signal_number) {
  g_received_signal = signal_number;
}

// Catches SIGINT/SIGTERM for the launcher's lifetime so they can be forwarded to the ranks.
class SignalForwarding {
 public:
  SignalForwarding() {
    g_received_signal = 0;
    struct sigaction action {};
    action.sa_handler = remember_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~SignalForwarding() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

struct Rank {
  pid_t pid = -1;
  bool running = false;
  int status = 0;  // waitpid status once it ended
};

std::string describe_status(int status) {
  std::ostringstream out;
  if (WIFEXITED(status)) {
    out << "exited with status " << WEXITSTATUS(status);
    if (WEXITSTATUS(status) == 127) out << " (the program could not be started)";
  } else if (WIFSIGNALED(status)) {
    out << "was killed by signal " << WTERMSIG(status) << " (" << strsignal(WTERMSIG(status))
        << ")";
  } else {
    out << "ended with wait status " << status;
  }
  return out.str();
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

bool succeeded(int status) {
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// The child's environment: the launcher's own, with the rank variables replaced.
std::vector<std::string> rank_environment(int rank, int nproc, int port) {
  std::vector<std::pair<std::string, std::string>> ours = {
      {"RANK", std::to_string(rank)},       {"WORLD_SIZE", std::to_string(nproc)},
      {"LOCAL_RANK", std::to_string(rank)}, {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
      {"MASTER_ADDR", "127.0.0.1"},         {"MASTER_PORT", std::to_string(port)}};
  if (std::getenv("NCCL_NVLS_ENABLE") == nullptr) ours.push_back({"NCCL_NVLS_ENABLE", "0"});
  std::vector<std::string> env;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    std::string text = *entry;
    std::string name = text.substr(0, text.find('='));
    bool replaced = false;
    for (const auto& [key, value] : ours) replaced = replaced || key == name;
    if (!replaced) env.push_back(text);
  }
  for (const auto& [key, value] : ours) env.push_back(key + "=" + value);
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& text : strings) pointers.push_back(text.data());
  pointers.push_back(nullptr);
  return pointers;
}

// Everything the child needs is built before fork: after fork only async-signal-safe calls.
pid_t spawn_rank(std::vector<std::string> argv, int rank, int nproc, int port) {
  std::vector<std::string> env = rank_environment(rank, nproc, port);
  std::vector<char*> child_argv = c_strings(argv);
  std::vector<char*> child_env = c_strings(env);
  std::string exec_error =
      "launcher: rank " + std::to_string(rank) + ": cannot run '" + argv[0] + "': ";
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) fail("launcher: fork failed for rank ", rank, ": ", std::strerror(errno));
  if (pid == 0) {
    // Own process group: a terminal's Ctrl-C reaches only the launcher, which forwards it
    // once; and the launcher can signal a rank together with whatever it started.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // the launcher died: do not train on as an orphan
    if (::getppid() != parent) ::_exit(1);
    ::execvpe(child_argv[0], child_argv.data(), child_env.data());
    const char* reason = std::strerror(errno);
    [[maybe_unused]] ssize_t ignored = ::write(2, exec_error.data(), exec_error.size());
    ignored = ::write(2, reason, std::strlen(reason));
    ignored = ::write(2, "\n", 1);
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here, so a signal sent right away finds the group
  return pid;
}

void signal_running(std::vector<Rank>& ranks, int signal_number) {
  for (Rank& rank : ranks)
    if (rank.running) ::kill(-rank.pid, signal_number);
}

}  // namespace

int launch_local(int nproc, const std::vector<std::string>& argv,
                 const LocalLaunchOptions& options) {
  INFLLM_CHECK(nproc >= 1, "launcher: --nproc must be at least 1, got ", nproc);
  INFLLM_CHECK(!argv.empty() && !argv[0].empty(), "launcher: no program to run");
  auto report = options.report ? options.report
                               : [](const std::string& line) { std::cerr << line << std::endl; };
  int port = options.master_port > 0 ? options.master_port : pick_free_port();

  SignalForwarding forwarding;
  std::vector<Rank> ranks(nproc);
  int first_failed = -1;
  int forwarded_signal = 0;
  bool stopping = false;
  Clock::time_point kill_deadline;
  auto stop_others = [&](int signal_number) {
    stopping = true;
    signal_running(ranks, signal_number);
    kill_deadline = Clock::now() + options.kill_grace;
  };

  for (int r = 0; r < nproc; ++r) {
    try {
      ranks[r] = {spawn_rank(argv, r, nproc, port), true, 0};
    } catch (const Error& error) {
      report(error.what());
      stop_others(SIGTERM);
      first_failed = r;
      ranks[r].status = 1 << 8;  // as if it exited with status 1
      break;
    }
  }

  int running = 0;
  for (const Rank& rank : ranks) running += rank.running;
  while (running > 0) {
    for (int r = 0; r < nproc; ++r) {
      Rank& rank = ranks[r];
      if (!rank.running || ::waitpid(rank.pid, &rank.status, WNOHANG) != rank.pid) continue;
      rank.running = false;
      --running;
      if (succeeded(rank.status) || stopping) continue;
      first_failed = r;
      report("launcher: rank " + std::to_string(r) + " (pid " + std::to_string(rank.pid) + ") " +
             describe_status(rank.status) + "; stopping the other ranks");
      stop_others(SIGTERM);
    }
    if (g_received_signal != 0 && forwarded_signal == 0) {
      forwarded_signal = g_received_signal;
      report(std::string("launcher: got ") + strsignal(forwarded_signal) +
             ", forwarding it to every rank");
      stop_others(forwarded_signal);
    }
    if (stopping && running > 0 && Clock::now() > kill_deadline) {
      report("launcher: ranks still alive after the grace period; sending SIGKILL");
      signal_running(ranks, SIGKILL);
      kill_deadline = Clock::time_point::max();
    }
    if (running > 0) std::this_thread::sleep_for(kPollPeriod);
  }

  if (forwarded_signal != 0) return 128 + forwarded_signal;
  if (first_failed < 0) return 0;
  for (int r = 0; r < nproc; ++r)
    if (r != first_failed && ranks[r].pid > 0)
      report("launcher: rank " + std::to_string(r) + " " + describe_status(ranks[r].status));
  report("launcher: failed: rank " + std::to_string(first_failed) + " " +
         describe_status(ranks[first_failed].status));
  return exit_code(ranks[first_failed].status);
}

}  // namespace infllm::distributed
