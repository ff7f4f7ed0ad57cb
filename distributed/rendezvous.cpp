#include "distributed/rendezvous.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "distributed/tcp_socket.h"

namespace infllm::distributed {
namespace {

constexpr uint32_t kMagic = 0x4c464e49;  // "INFL"
constexpr uint32_t kVersion = 1;
constexpr uint32_t kStatusOk = 0;
constexpr uint32_t kStatusError = 1;
constexpr uint32_t kMaxPayload = 1u << 20;
constexpr auto kRetryPause = std::chrono::milliseconds(50);
constexpr auto kReplyMargin = std::chrono::seconds(5);

// What a rank tells rank 0 when it joins.
struct Hello {
  int32_t rank = 0;
  int32_t world_size = 0;
  std::string run_key;
};

double seconds(std::chrono::milliseconds duration) {
  return duration.count() / 1000.0;
}

std::string endpoint(const LaunchEnv& env) {
  return env.master_addr + ":" + std::to_string(env.master_port);
}

// Integers travel as 4 little-endian bytes whatever the host order.
void put_u32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}

uint32_t get_u32(const uint8_t* bytes) {
  return uint32_t(bytes[0]) | uint32_t(bytes[1]) << 8 | uint32_t(bytes[2]) << 16 |
         uint32_t(bytes[3]) << 24;
}

uint32_t recv_u32(const Socket& socket, Clock::time_point deadline, const std::string& what) {
  uint8_t bytes[4];
  recv_all(socket, bytes, 4, deadline, what);
  return get_u32(bytes);
}

std::string recv_text(const Socket& socket, Clock::time_point deadline, const std::string& what) {
  uint32_t length = recv_u32(socket, deadline, what);
  if (length > kMaxPayload) fail(what, ": message of ", length, " bytes is too long");
  std::string text(length, '\0');
  recv_all(socket, text.data(), length, deadline, what);
  return text;
}

void send_reply(const Socket& socket, uint32_t status, const std::string& payload,
                Clock::time_point deadline) {
  std::string message;
  put_u32(message, status);
  put_u32(message, static_cast<uint32_t>(payload.size()));
  message += payload;
  send_all(socket, message.data(), message.size(), deadline, "rendezvous reply");
}

Hello recv_hello(const Socket& socket, Clock::time_point deadline) {
  const std::string what = "rendezvous: reading a joining rank's hello";
  if (recv_u32(socket, deadline, what) != kMagic || recv_u32(socket, deadline, what) != kVersion)
    fail(what, ": not an infllm rendezvous message (another program on MASTER_PORT?)");
  Hello hello;
  hello.rank = static_cast<int32_t>(recv_u32(socket, deadline, what));
  hello.world_size = static_cast<int32_t>(recv_u32(socket, deadline, what));
  hello.run_key = recv_text(socket, deadline, what);
  return hello;
}

// Rank 0 tells every connected rank why the rendezvous failed, then fails itself.
[[noreturn]] void fail_all(std::vector<std::optional<Socket>>& joined, const std::string& why) {
  auto deadline = Clock::now() + std::chrono::seconds(2);
  for (std::optional<Socket>& peer : joined) {
    if (!peer) continue;
    try {
      send_reply(*peer, kStatusError, "rank 0 aborted the rendezvous: " + why, deadline);
    } catch (const Error&) {
      // That rank is gone already; the others still get told.
    }
  }
  fail(why);
}

// The reason a joining rank cannot be part of this run, or empty when it can.
std::string check_hello(const Hello& hello, const LaunchEnv& env, const std::string& key,
                        const std::vector<std::optional<Socket>>& joined) {
  std::ostringstream why;
  if (hello.world_size != env.world_size)
    why << "rendezvous: world size mismatch: rank " << hello.rank
        << " has WORLD_SIZE=" << hello.world_size << " but rank 0 has WORLD_SIZE=" << env.world_size
        << "; start every rank with the same world size";
  else if (hello.rank <= 0 || hello.rank >= env.world_size)
    why << "rendezvous: a process joined as rank " << hello.rank << ", outside [1, "
        << env.world_size << ")";
  else if (hello.run_key != key)
    why << "rendezvous: rank " << hello.rank << " belongs to run '" << hello.run_key
        << "' but rank 0 runs '" << key << "' (a stray process of another run?)";
  else if (joined[hello.rank])
    why << "rendezvous: rank " << hello.rank << " joined twice; two processes have the same rank";
  return why.str();
}

std::vector<uint8_t> serve_as_rank0(const LaunchEnv& env, const RendezvousOptions& options,
                                    const std::string& key, const std::vector<uint8_t>& blob) {
  auto deadline = Clock::now() + options.timeout;
  Socket listener = listen_tcp(env.master_port);
  std::vector<std::optional<Socket>> joined(env.world_size);
  int count = 1;
  while (count < env.world_size) {
    std::optional<Socket> peer = accept_until(listener, deadline);
    if (!peer) break;
    Hello hello;
    try {
      hello = recv_hello(*peer, std::min(deadline, Clock::now() + std::chrono::seconds(10)));
    } catch (const Error&) {
      continue;  // not one of ours (a port probe): keep waiting for the real ranks
    }
    std::string why = check_hello(hello, env, key, joined);
    if (!why.empty()) {
      joined.push_back(std::move(peer));  // the offending rank hears why, like the others
      fail_all(joined, why);
    }
    joined[hello.rank] = std::move(peer);
    ++count;
  }
  if (count < env.world_size) {
    std::ostringstream why;
    why << "rendezvous: rank 0 waited " << seconds(options.timeout) << " s on port "
        << env.master_port << " but rank(s) ";
    const char* separator = "";
    for (int rank = 1; rank < env.world_size; ++rank) {
      if (joined[rank]) continue;
      why << separator << rank;
      separator = ", ";
    }
    why << " of WORLD_SIZE=" << env.world_size << " never connected; check that those processes "
        << "started and can reach " << endpoint(env) << " (firewall, MASTER_ADDR)";
    fail_all(joined, why.str());
  }
  std::string payload(blob.begin(), blob.end());
  for (int rank = 1; rank < env.world_size; ++rank)
    send_reply(*joined[rank], kStatusOk, payload, deadline + std::chrono::seconds(10));
  return blob;
}

// Connects to rank 0, retrying while it is not listening yet.
Socket connect_to_rank0(const LaunchEnv& env, const RendezvousOptions& options,
                        Clock::time_point deadline) {
  std::string why = "no attempt made";
  while (Clock::now() < deadline) {
    std::optional<Socket> socket = try_connect_tcp(env.master_addr, env.master_port, 1000, why);
    if (socket) return std::move(*socket);
    std::this_thread::sleep_for(kRetryPause);
  }
  fail("rendezvous: rank ", env.rank, " could not connect to rank 0 at ", endpoint(env), " within ",
       seconds(options.timeout), " s (last error: ", why,
       "); check that rank 0 is running and MASTER_ADDR/MASTER_PORT are the same on every rank");
}

std::vector<uint8_t> join_as_rank(const LaunchEnv& env, const RendezvousOptions& options,
                                  const std::string& key) {
  auto connect_deadline = Clock::now() + options.timeout;
  std::string hello;
  put_u32(hello, kMagic);
  put_u32(hello, kVersion);
  put_u32(hello, static_cast<uint32_t>(env.rank));
  put_u32(hello, static_cast<uint32_t>(env.world_size));
  put_u32(hello, static_cast<uint32_t>(key.size()));
  hello += key;
  while (true) {
    Socket socket = connect_to_rank0(env, options, connect_deadline);
    // Rank 0 started before we connected, so it answers within its own timeout from now; the
    // margin lets its verdict (e.g. "rank 2 never connected") arrive before we give up.
    auto reply_deadline = Clock::now() + options.timeout + kReplyMargin;
    uint32_t status = 0;
    try {
      send_all(socket, hello.data(), hello.size(), reply_deadline, "rendezvous hello");
      status = recv_u32(socket, reply_deadline, "rendezvous");
    } catch (const Error& error) {
      // Rank 0 closed a connection left over from its previous round: join the next one.
      if (Clock::now() < connect_deadline && Clock::now() < reply_deadline) {
        std::this_thread::sleep_for(kRetryPause);
        continue;
      }
      fail("rendezvous: rank ", env.rank, " connected to rank 0 at ", endpoint(env),
           " but got no answer within ", seconds(options.timeout), " s (", error.what(),
           "); rank 0 may still be waiting for ranks that never started: see its log");
    }
    std::string payload = recv_text(socket, reply_deadline, "rendezvous");
    if (status != kStatusOk) fail("rendezvous failed on rank ", env.rank, ": ", payload);
    return std::vector<uint8_t>(payload.begin(), payload.end());
  }
}

// File layout: magic, world size, run key, blob; written whole to a temp file, then renamed.
std::string file_image(const LaunchEnv& env, const std::string& key,
                       const std::vector<uint8_t>& blob) {
  std::string image;
  put_u32(image, kMagic);
  put_u32(image, static_cast<uint32_t>(env.world_size));
  put_u32(image, static_cast<uint32_t>(key.size()));
  image += key;
  put_u32(image, static_cast<uint32_t>(blob.size()));
  image.append(blob.begin(), blob.end());
  return image;
}

void publish_file(const std::string& path, const std::string& image) {
  std::string temp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    fail("rendezvous: cannot create '", temp, "': ", std::strerror(errno),
         "; the file: path must be in a writable directory shared by all ranks");
  bool written = ::write(fd, image.data(), image.size()) == static_cast<ssize_t>(image.size());
  bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!written || !synced || std::rename(temp.c_str(), path.c_str()) != 0) {
    std::remove(temp.c_str());
    fail("rendezvous: cannot write '", path, "': ", std::strerror(errno));
  }
}

std::vector<uint8_t> read_published_file(const LaunchEnv& env, const RendezvousOptions& options,
                                         const std::string& key) {
  const std::string& path = options.file_path;
  auto deadline = Clock::now() + options.timeout;
  while (true) {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::string image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      auto bytes = reinterpret_cast<const uint8_t*>(image.data());
      size_t size = image.size();
      if (size < 12 || get_u32(bytes) != kMagic)
        fail("rendezvous: '", path, "' is not an infllm rendezvous file; use a fresh path");
      int world = static_cast<int>(get_u32(bytes + 4));
      uint32_t key_length = get_u32(bytes + 8);
      if (world != env.world_size)
        fail("rendezvous: world size mismatch: '", path,
             "' was written by rank 0 with WORLD_SIZE=", world, " but rank ", env.rank,
             " has WORLD_SIZE=", env.world_size,
             " (a stale file from another run? use a fresh path per run)");
      if (size < 16 + size_t(key_length)) fail("rendezvous: '", path, "' is truncated");
      std::string file_key(image.data() + 12, key_length);
      if (file_key != key)
        fail("rendezvous: '", path, "' belongs to run '", file_key, "' but rank ", env.rank,
             " runs '", key, "' (a stale file? use a fresh path per run)");
      uint32_t blob_length = get_u32(bytes + 12 + key_length);
      if (size != 16 + size_t(key_length) + blob_length)
        fail("rendezvous: '", path, "' is truncated");
      return std::vector<uint8_t>(bytes + 16 + key_length, bytes + size);
    }
    if (Clock::now() >= deadline)
      fail("rendezvous: rank ", env.rank, " waited ", seconds(options.timeout), " s for rank 0 to ",
           "write '", path, "'; check that rank 0 started and that the path is on a filesystem ",
           "every rank sees");
    std::this_thread::sleep_for(kRetryPause);
  }
}

std::vector<uint8_t> exchange(const LaunchEnv& env, const RendezvousOptions& options,
                              const std::string& key, std::vector<uint8_t> blob) {
  if (env.rank == 0 && blob.size() > kMaxPayload)
    fail("rendezvous: blob of ", blob.size(), " bytes exceeds the limit of ", kMaxPayload);
  if (env.world_size == 1) return blob;
  if (options.mode == RendezvousMode::file) {
    if (options.file_path.empty()) fail("rendezvous: file mode needs a path (file:/shared/PATH)");
    if (env.rank != 0) return read_published_file(env, options, key);
    publish_file(options.file_path, file_image(env, key, blob));
    return blob;
  }
  if (env.master_addr.empty() || env.master_port <= 0)
    fail("rendezvous: rank ", env.rank, " has no MASTER_ADDR/MASTER_PORT for the TCP rendezvous");
  return env.rank == 0 ? serve_as_rank0(env, options, key, blob) : join_as_rank(env, options, key);
}

}  // namespace

RendezvousOptions parse_rendezvous_spec(const std::string& spec) {
  RendezvousOptions options;
  if (spec == "env") return options;
  if (spec.rfind("file:", 0) == 0 && spec.size() > 5) {
    options.mode = RendezvousMode::file;
    options.file_path = spec.substr(5);
    return options;
  }
  fail("rendezvous: '", spec, "' is not a rendezvous; use 'env' (TCP at MASTER_ADDR:MASTER_PORT) ",
       "or 'file:/shared/path'");
}

std::vector<uint8_t> exchange_unique_id(const LaunchEnv& env, const RendezvousOptions& options,
                                        std::vector<uint8_t> blob_if_rank0) {
  return exchange(env, options, options.run_key, std::move(blob_if_rank0));
}

void tcp_barrier(const LaunchEnv& env, const RendezvousOptions& options, const std::string& name) {
  RendezvousOptions tcp = options;
  tcp.mode = RendezvousMode::env;
  exchange(env, tcp, options.run_key + "/barrier/" + name, {});
}

}  // namespace infllm::distributed
