#include "distributed/tcp_socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace infllm::distributed {
namespace {

int milliseconds_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

// Waits until the socket is ready for `events`; false when the deadline passes first.
bool wait_ready(int fd, short events, Clock::time_point deadline) {
  while (true) {
    pollfd entry{fd, events, 0};
    int ready = ::poll(&entry, 1, milliseconds_left(deadline));
    if (ready > 0) return true;
    if (ready == 0) return false;
    if (errno != EINTR) fail("tcp: poll failed: ", std::strerror(errno));
  }
}

Socket new_tcp_socket() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("tcp: socket() failed: ", std::strerror(errno));
  return Socket(fd);
}

void set_nonblocking(int fd, bool on) {
  int flags = ::fcntl(fd, F_GETFL, 0);
  ::fcntl(fd, F_SETFL, on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK));
}

}  // namespace

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

Socket::~Socket() {
  if (fd_ >= 0) ::close(fd_);
}

int Socket::release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

Socket listen_tcp(int port) {
  Socket listener = new_tcp_socket();
  int one = 1;
  ::setsockopt(listener.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(listener.fd(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0)
    fail("tcp: cannot listen on port ", port, ": ", std::strerror(errno),
         "; choose another MASTER_PORT or stop the process that holds it");
  if (::listen(listener.fd(), 1024) != 0)
    fail("tcp: listen on port ", port, " failed: ", std::strerror(errno));
  return listener;
}

std::optional<Socket> accept_until(const Socket& listener, Clock::time_point deadline) {
  while (wait_ready(listener.fd(), POLLIN, deadline)) {
    int fd = ::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      return Socket(fd);
    }
    if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN)
      fail("tcp: accept failed: ", std::strerror(errno));
  }
  return std::nullopt;
}

std::optional<Socket> try_connect_tcp(const std::string& host, int port, int attempt_timeout_ms,
                                      std::string& why) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int status = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (status != 0) {
    why = std::string("cannot resolve host '") + host + "': " + ::gai_strerror(status);
    return std::nullopt;
  }
  Socket socket = new_tcp_socket();
  set_nonblocking(socket.fd(), true);
  int result = ::connect(socket.fd(), found->ai_addr, found->ai_addrlen);
  ::freeaddrinfo(found);
  if (result != 0 && errno == EINPROGRESS) {
    auto deadline = Clock::now() + std::chrono::milliseconds(attempt_timeout_ms);
    if (!wait_ready(socket.fd(), POLLOUT, deadline)) {
      why = "connection attempt timed out";
      return std::nullopt;
    }
    int error = 0;
    socklen_t length = sizeof(error);
    ::getsockopt(socket.fd(), SOL_SOCKET, SO_ERROR, &error, &length);
    result = error == 0 ? 0 : -1;
    errno = error;
  }
  if (result != 0) {
    why = std::strerror(errno);
    return std::nullopt;
  }
  set_nonblocking(socket.fd(), false);
  int one = 1;
  ::setsockopt(socket.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return socket;
}

void send_all(const Socket& socket, const void* data, size_t bytes, Clock::time_point deadline,
              const std::string& what) {
  const char* cursor = static_cast<const char*>(data);
  while (bytes > 0) {
    if (!wait_ready(socket.fd(), POLLOUT, deadline)) fail(what, ": timed out while sending");
    ssize_t sent = ::send(socket.fd(), cursor, bytes, MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) fail(what, ": connection lost while sending (", std::strerror(errno), ")");
    cursor += sent;
    bytes -= static_cast<size_t>(sent);
  }
}

void recv_all(const Socket& socket, void* data, size_t bytes, Clock::time_point deadline,
              const std::string& what) {
  char* cursor = static_cast<char*>(data);
  while (bytes > 0) {
    if (!wait_ready(socket.fd(), POLLIN, deadline)) fail(what, ": timed out while receiving");
    ssize_t got = ::recv(socket.fd(), cursor, bytes, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got == 0) fail(what, ": the peer closed the connection");
    if (got < 0) fail(what, ": connection lost while receiving (", std::strerror(errno), ")");
    cursor += got;
    bytes -= static_cast<size_t>(got);
  }
}

int pick_free_port() {
  Socket probe = new_tcp_socket();
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = 0;
  if (::bind(probe.fd(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0)
    fail("tcp: cannot bind a probe socket to find a free port: ", std::strerror(errno));
  socklen_t length = sizeof(address);
  ::getsockname(probe.fd(), reinterpret_cast<sockaddr*>(&address), &length);
  return ntohs(address.sin_port);
}

}  // namespace infllm::distributed
