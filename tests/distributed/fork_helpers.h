// Runs a function in a forked child process and collects what it reports: the real-process
// setting of the rendezvous and launcher tests (separate address spaces, real sockets).
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/error.h"

namespace infllm::distributed::testing {

struct Child {
  pid_t pid = -1;
  int pipe_fd = -1;
};

struct ChildResult {
  int exit_code = -1;
  std::string message;  // what the function returned or the error it threw
};

// `body` returns "" on success or a failure description; an infllm::Error becomes
// "error: <what>". The child _exits, so the parent's test framework never runs twice.
template <class Body>
Child fork_child(Body body) {
  int fds[2];
  if (::pipe(fds) != 0) fail("test: pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) fail("test: fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    std::string message;
    int code = 0;
    try {
      message = body();
      code = message.empty() ? 0 : 1;
    } catch (const std::exception& error) {
      message = std::string("error: ") + error.what();
      code = 2;
    }
    [[maybe_unused]] ssize_t ignored = ::write(fds[1], message.data(), message.size());
    ::close(fds[1]);
    ::_exit(code);
  }
  ::close(fds[1]);
  return {pid, fds[0]};
}

// A fresh folder under /tmp, removed with everything in it when the test ends.
struct TempDir {
  std::string path;
  TempDir() {
    std::string pattern = "/tmp/infllm_dist_XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) fail("test: mkdtemp failed");
    path = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

inline ChildResult wait_child(const Child& child) {
  ChildResult result;
  char buffer[4096];
  ssize_t got;
  while ((got = ::read(child.pipe_fd, buffer, sizeof(buffer))) > 0)
    result.message.append(buffer, got);
  ::close(child.pipe_fd);
  int status = 0;
  ::waitpid(child.pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

}  // namespace infllm::distributed::testing
