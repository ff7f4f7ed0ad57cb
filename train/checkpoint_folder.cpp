// The checkpoints folder of a run: names, listing, the newest file that verifies, pruning and
// setting damaged files aside (train/checkpoint.h).
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>

#include "train/checkpoint.h"

namespace infllm::train {

namespace fs = std::filesystem;

std::string checkpoint_dir(const std::string& out_dir) {
  return (fs::path(out_dir) / "checkpoints").string();
}

std::string checkpoint_path(const std::string& out_dir, int64_t step) {
  INFLLM_CHECK(step >= 0, "checkpoint_path: step ", step, " is negative; steps count from 0");
  char name[40];
  std::snprintf(name, sizeof(name), "step_%08lld.h5", static_cast<long long>(step));
  return (fs::path(checkpoint_dir(out_dir)) / name).string();
}

std::optional<int64_t> checkpoint_step(std::string_view filename) {
  if (!filename.starts_with("step_") || !filename.ends_with(".h5")) return std::nullopt;
  const std::string_view digits = filename.substr(5, filename.size() - 8);
  if (digits.empty() ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  int64_t step = -1;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), step);
  if (error != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return step;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code error;
  for (const auto& item : fs::directory_iterator(dir, error)) {
    const std::optional<int64_t> step = checkpoint_step(item.path().filename().string());
    if (step && item.is_regular_file()) found.emplace_back(*step, item.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> paths;
  for (auto& [step, path] : found) paths.push_back(std::move(path));
  return paths;
}

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  std::vector<std::string> paths = list_checkpoints(dir);
  if (paths.empty()) return std::nullopt;
  return paths.back();
}

CheckpointScan scan_checkpoints(const std::string& dir) {
  CheckpointScan scan;
  const std::vector<std::string> paths = list_checkpoints(dir);
  for (auto path = paths.rbegin(); path != paths.rend(); ++path) {
    std::optional<std::string> problem = verify_checkpoint(*path);
    if (!problem) {
      scan.newest_good = *path;
      break;
    }
    scan.damaged.emplace_back(*path, std::move(*problem));
  }
  return scan;
}

std::optional<std::string> prune_checkpoints(const std::string& dir, int keep_last) {
  INFLLM_CHECK(keep_last >= 1, "prune_checkpoints: keep_last is ", keep_last,
               "; keep at least 1 checkpoint (set checkpoint.keep_last >= 1)");
  const std::vector<std::string> paths = list_checkpoints(dir);
  const std::optional<std::string> newest_good = scan_checkpoints(dir).newest_good;
  if (!newest_good) return std::nullopt;  // nothing verifies: delete nothing
  // Files are deleted only below both the keep window and the newest verified file.
  const size_t good = size_t(std::find(paths.begin(), paths.end(), *newest_good) - paths.begin());
  const size_t window = paths.size() > size_t(keep_last) ? paths.size() - size_t(keep_last) : 0;
  for (size_t i = 0; i < std::min(good, window); ++i) {
    std::error_code error;
    fs::remove(paths[i], error);
    INFLLM_CHECK(!error, "prune_checkpoints: cannot delete '", paths[i], "': ", error.message());
  }
  return newest_good;
}

std::string set_aside_damaged(const std::string& path) {
  std::string target = path + ".damaged";
  for (int n = 2; fs::exists(target); ++n) target = path + ".damaged." + std::to_string(n);
  std::error_code error;
  fs::rename(path, target, error);
  INFLLM_CHECK(!error, "checkpoint '", path, "': cannot rename it to '", target,
               "': ", error.message(), " (is the folder writable?)");
  return target;
}

}  // namespace infllm::train
