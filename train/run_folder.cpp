#include "train/run_folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/error.h"
#include "train/checkpoint.h"

namespace infllm::train {
namespace {

namespace fs = std::filesystem;

// The files a run writes into its folder (besides the lock): what --overwrite moves aside.
std::vector<fs::path> run_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const char* name : {"checkpoints", "metrics.jsonl", "recipe.yaml"}) {
    if (fs::exists(fs::symlink_status(dir / name))) files.push_back(dir / name);
  }
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0)
      files.push_back(entry.path());
  }
  return files;
}

std::string holder_of(int fd) {
  char text[256] = {};
  const ssize_t got = pread(fd, text, sizeof text - 1, 0);
  std::string holder = got > 0 ? std::string(text, size_t(got)) : "";
  while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
  return holder.empty() ? "a process that has not written its pid yet" : holder;
}

std::string host_name() {
  char name[256] = {};
  return gethostname(name, sizeof name - 1) == 0 ? name : "unknown host";
}

// "previous-20250101-120000" in `dir`, with "-2", "-3", ... when taken.
fs::path previous_run_folder(const fs::path& dir) {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "previous-%Y%m%d-%H%M%S", &local);
  fs::path path = dir / stamp;
  for (int n = 2; fs::exists(path); ++n)
    path = dir / (std::string(stamp) + "-" + std::to_string(n));
  return path;
}

}  // namespace

std::string describe_earlier_run(const std::string& out_dir) {
  std::string found;
  const std::vector<std::string> checkpoints = list_checkpoints(checkpoint_dir(out_dir));
  if (!checkpoints.empty())
    found = std::to_string(checkpoints.size()) + " checkpoint" +
            (checkpoints.size() > 1 ? "s" : "") + " (newest " +
            fs::path(checkpoints.back()).filename().string() + ")";
  std::error_code error;
  const fs::path metrics = fs::path(out_dir) / "metrics.jsonl";
  if (fs::is_regular_file(metrics, error) && fs::file_size(metrics, error) > 0)
    found += (found.empty() ? "" : ", ") + std::string("metrics.jsonl");
  return found;
}

RunFolder::RunFolder(std::string out_dir, RunStart start)
    : out_dir_(std::move(out_dir)), start_(start) {
  std::error_code error;
  if (!fs::exists(out_dir_, error)) {
    created_ = fs::create_directories(out_dir_, error);
    INFLLM_CHECK(!error, "train.out_dir: cannot create the run folder '", out_dir_,
                 "': ", error.message(),
                 " (a read-only or full file system? pick another "
                 "train.out_dir)");
  }
  INFLLM_CHECK(fs::is_directory(out_dir_), "train.out_dir: '", out_dir_,
               "' exists but is not a folder; pick another train.out_dir");
  const std::string lock_path = (fs::path(out_dir_) / kLockName).string();
  // The holder removes the lock file when it ends: a file opened just before that removal is
  // no longer the lock, so the claim retries until the locked file is the one at the path.
  for (int attempt = 0; lock_fd_ < 0; ++attempt) {
    INFLLM_CHECK(attempt < 100, "train.out_dir: '", lock_path,
                 "' keeps being replaced by other processes; is another infllm run starting in '",
                 out_dir_, "'?");
    const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      const int code = errno;
      if (created_) fs::remove(out_dir_, error);
      fail("train.out_dir: cannot create the lock file '", lock_path, "': ", std::strerror(code),
           " (is the folder read-only? pick a writable train.out_dir)");
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int code = errno;
      const std::string holder = code == EWOULDBLOCK ? holder_of(fd) : "";
      ::close(fd);
      INFLLM_CHECK(code != EWOULDBLOCK, "train.out_dir: '", out_dir_,
                   "' is in use by another infllm run (", holder, "; lock file ", lock_path,
                   "); wait for it to end or stop it, or pick another train.out_dir");
      fail("train.out_dir: cannot lock '", lock_path, "': ", std::strerror(code),
           " (a file system without flock? pick a train.out_dir on a local disk)");
    }
    struct stat held {
    }, at_path{};
    if (::fstat(fd, &held) == 0 && ::stat(lock_path.c_str(), &at_path) == 0 &&
        held.st_dev == at_path.st_dev && held.st_ino == at_path.st_ino) {
      lock_fd_ = fd;
    } else {
      ::close(fd);
    }
  }
  const std::string holder = "pid " + std::to_string(::getpid()) + " on " + host_name() + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 ||
      ::pwrite(lock_fd_, holder.data(), holder.size(), 0) != ssize_t(holder.size())) {
    // The lock holds without the pid; a second writer is still refused, just less helpfully.
  }
  if (start_ != RunStart::fresh) return;
  const std::string earlier = describe_earlier_run(out_dir_);
  if (earlier.empty()) return;
  const std::string message =
      "train.out_dir: '" + out_dir_ + "' already holds a run (" + earlier +
      "); continue it with --resume, or start over with --overwrite (moves its files into '" +
      out_dir_ + "/previous-<date>-<time>/', deleting nothing), or pick another train.out_dir";
  release();  // a constructor that throws runs no destructor
  throw Error(message);
}

RunFolder::~RunFolder() {
  release();
}

void RunFolder::release() {
  if (lock_fd_ < 0) return;
  const fs::path lock_path = fs::path(out_dir_) / kLockName;
  // Unlink while still holding the lock: a process that opened this file meanwhile sees that
  // the path no longer names it and retries.
  ::unlink(lock_path.c_str());
  ::close(lock_fd_);
  lock_fd_ = -1;
  std::error_code error;
  if (created_ && !accepted_) fs::remove(out_dir_, error);  // only when empty
}

std::string RunFolder::accept(const std::string& recipe_yaml) {
  INFLLM_CHECK(!accepted_, "run folder '", out_dir_, "': accept() called twice");
  const fs::path dir(out_dir_);
  std::string moved_to;
  if (start_ == RunStart::overwrite) {
    const std::vector<fs::path> files = run_files(dir);
    if (!files.empty()) {
      const fs::path previous = previous_run_folder(dir);
      std::error_code error;
      fs::create_directory(previous, error);
      INFLLM_CHECK(!error, "--overwrite: cannot create '", previous.string(),
                   "': ", error.message());
      for (const fs::path& file : files) {
        fs::rename(file, previous / file.filename(), error);
        INFLLM_CHECK(!error, "--overwrite: moving '", file.string(), "' into '", previous.string(),
                     "' failed: ", error.message(),
                     "; the files already moved are there, the others still in '", out_dir_, "'");
      }
      moved_to = previous.string();
    }
  }
  std::error_code error;
  fs::create_directories(checkpoint_dir(out_dir_), error);
  INFLLM_CHECK(!error, "train.out_dir: cannot create '", checkpoint_dir(out_dir_),
               "': ", error.message());
  const fs::path recipe = dir / "recipe.yaml";
  const fs::path temp = dir / ("recipe.yaml.tmp-" + std::to_string(::getpid()));
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << recipe_yaml;
    out.flush();
    if (!out) {
      out.close();
      fs::remove(temp, error);
      fail("train.out_dir: writing '", temp.string(), "' failed (disk full or read-only?)");
    }
  }
  fs::rename(temp, recipe, error);
  INFLLM_CHECK(!error, "train.out_dir: renaming '", temp.string(), "' onto '", recipe.string(),
               "' failed: ", error.message());
  accepted_ = true;
  return moved_to;
}

}  // namespace infllm::train
