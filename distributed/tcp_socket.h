// Plain POSIX TCP with deadlines: the transport of the rendezvous and the launcher's port pick.
// Every blocking step takes a deadline, so a missing peer turns into an error, never a hang.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace infllm::distributed {

using Clock = std::chrono::steady_clock;

// Owns one socket descriptor; closes it when destroyed.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& other) noexcept : fd_(other.release()) {}
  Socket& operator=(Socket&& other) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket();

  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release();

 private:
  int fd_ = -1;
};

// Listens on every IPv4 interface at `port` (SO_REUSEADDR, so a restarted rank 0 can rebind).
Socket listen_tcp(int port);

// Waits for one connection until `deadline`; nullopt when the deadline passes first.
std::optional<Socket> accept_until(const Socket& listener, Clock::time_point deadline);

// One connection attempt to host:port (IPv4, name resolved). On failure returns nullopt and
// puts the reason into `why` (refused, unknown host, ...): the caller decides whether to retry.
std::optional<Socket> try_connect_tcp(const std::string& host, int port, int attempt_timeout_ms,
                                      std::string& why);

// Sends or receives exactly `bytes`, failing with an infllm::Error naming `what` on a closed
// connection, a socket error or the deadline.
void send_all(const Socket& socket, const void* data, size_t bytes, Clock::time_point deadline,
              const std::string& what);
void recv_all(const Socket& socket, void* data, size_t bytes, Clock::time_point deadline,
              const std::string& what);

// A TCP port that was free a moment ago on this host (bound to port 0, then released).
int pick_free_port();

}  // namespace infllm::distributed
