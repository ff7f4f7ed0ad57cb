// The names of the recipe's own enums, and the checkpoint path convention (`.../latest`).
// Loading, validation and writing live in recipe_load.cpp, recipe_validate.cpp and
// recipe_write.cpp.
#include "train/recipe.h"

#include <filesystem>
#include <optional>
#include <span>

#include "core/error.h"
#include "train/checkpoint.h"

namespace infllm::train {
namespace fs = std::filesystem;

std::span<const EnumName<DeviceChoice>> enum_names(DeviceChoice) {
  static constexpr EnumName<DeviceChoice> names[] = {
      {DeviceChoice::automatic, "auto"}, {DeviceChoice::cpu, "cpu"}, {DeviceChoice::cuda, "cuda"}};
  return names;
}
std::span<const EnumName<Precision>> enum_names(Precision) {
  static constexpr EnumName<Precision> names[] = {{Precision::bf16, "bf16"},
                                                  {Precision::f32, "f32"}};
  return names;
}

std::string_view to_string(DeviceChoice device) {
  return enum_to_string(device);
}
std::string_view to_string(Precision precision) {
  return enum_to_string(precision);
}

std::string resolve_checkpoint_path(const std::string& path) {
  const fs::path named(path);
  if (named.filename() != "latest") {
    INFLLM_CHECK(fs::is_regular_file(named), "checkpoint not found: ", path);
    return path;
  }
  const fs::path folder = named.has_parent_path() ? named.parent_path() : fs::path(".");
  INFLLM_CHECK(fs::is_directory(folder), "checkpoint folder not found: ", folder.string(),
               " (named by ", path, ")");
  // step_XXXXXXXX.h5: the zero-padded step sorts by name, but compare the numbers anyway.
  fs::path newest;
  int64_t newest_step = -1;
  for (const auto& item : fs::directory_iterator(folder)) {
    const std::optional<int64_t> step = checkpoint_step(item.path().filename().string());
    if (!item.is_regular_file() || !step) continue;
    if (*step > newest_step) newest_step = *step, newest = item.path();
  }
  INFLLM_CHECK(newest_step >= 0, "no step_XXXXXXXX.h5 checkpoint in ", folder.string(),
               " (named by ", path, ")");
  return newest.string();
}

}  // namespace infllm::train
