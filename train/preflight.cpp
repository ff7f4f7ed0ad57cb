#include "train/preflight.h"

#include <optional>
#include <utility>
#include <vector>

#include "data/byte_tokenizer.h"
#include "data/hf_tokenizer.h"
#include "data/token_file.h"
#include "data/token_file_check.h"
#include "train/checkpoint.h"
#include "train/hf_model.h"
#include "train/memory_estimate.h"
#include "train/run_setup.h"
#include "train/tokenizer_files.h"

namespace infllm::train {
namespace {

// The tokenizer of train.init_from's model when it is known for sure: not for a model assumed
// to speak the byte tokenizer, nor for one that cannot be read or whose chain of finetunes
// disagrees with itself (loading its weights names an unreadable checkpoint).
std::optional<ModelTokenizer> init_tokenizer(const std::string& init_from) {
  try {
    if (init_from.starts_with("hf:")) {
      std::optional<ModelTokenizer> found = folder_tokenizer(strip_hf_prefix(init_from));
      if (found) found->found = found->dir + "/tokenizer.json";
      return found;
    }
    const std::string path = resolve_checkpoint_path(init_from);
    const TokenizerLookup found =
        checkpoint_tokenizer(path, load_checkpoint_attributes(path).strings);
    if (found.byte_assumed) return std::nullopt;
    return found.tokenizer;
  } catch (const Error&) {
    return std::nullopt;
  }
}

// The `tokenizer` attribute of a token file, when it names a tokenizer infllm knows.
std::optional<std::string> file_tokenizer(const std::string& path) {
  try {
    std::string id = data::TokenFile(path).attributes().tokenizer;
    if (id == data::ByteTokenizer::kName || id.starts_with(data::kHfTokenizerPrefix)) return id;
  } catch (const Error&) {
    // check_token_file names what is wrong with the file.
  }
  return std::nullopt;
}

}  // namespace

void check_data_tokenizers(const Recipe& recipe, bool check_val) {
  const std::string& init = recipe.train.init_from;
  if (init.empty()) return;
  std::vector<std::pair<std::string, std::string>> files = {{"data.train", recipe.data.train}};
  if (check_val) files.emplace_back("data.val", recipe.data.val);
  std::optional<ModelTokenizer> model;  // looked up once, and only for a token file
  for (const auto& [key, path] : files) {
    if (path.empty() || path == kRandomData) continue;
    const std::optional<std::string> data = file_tokenizer(path);
    if (!data) continue;
    if (!model) model = init_tokenizer(init);
    if (!model) return;
    if (*data == model->id) continue;
    const std::string prepare =
        model->is_byte() ? "infllm prepare -o OUT.h5 TEXTS... (the byte tokenizer)"
                         : "scripts/prepare-hf --tokenizer " + model->dir + " -o OUT.h5 TEXTS...";
    fail(key, ": '", path, "' holds ids of tokenizer ", *data, ", but train.init_from=", init,
         " speaks tokenizer ", model->id, " (", model->found,
         "); a model finetuned on another tokenizer's ids reads them as other tokens. Prepare "
         "the text with the model's tokenizer: ",
         prepare,
         ", and point data.train and data.val at the files it writes "
         "(docs/interop.md)");
  }
}

Device training_device(const Recipe& recipe, const distributed::LaunchEnv& env) {
  if (env.world_size == 1) return choose_device(recipe);
  return Device::cuda(env.local_rank);
}

void check_before_training(const Recipe& recipe, const distributed::LaunchEnv& env, Device device) {
  // Memory first: it needs no file and catches the absurd sizes before anything is read.
  const MemoryEstimate estimate =
      estimate_memory(recipe, device.is_cuda(), env.world_size, /*ranks_per_host=*/1);
  const DeviceMemory gpu = device_memory(device);
  check_memory(estimate, available_host_bytes(), double(gpu.free_bytes), device.str());

  // The tokenizers before the tokens: data of another tokenizer often also fails the vocab
  // check, with a message that would not say why.
  check_data_tokenizers(recipe, /*check_val=*/env.rank == 0);

  const int64_t T = recipe.data.seq_len;
  if (recipe.data.train != kRandomData) {
    data::TokenFileNeeds needs;
    needs.key = "data.train";
    needs.min_tokens = 2 * T;  // one window plus the loader's per-epoch shift of up to T tokens
    needs.min_tokens_fix = "lower data.seq_len or use a larger corpus";
    needs.vocab_limit = recipe.model.vocab_size;
    data::check_token_file(recipe.data.train, needs, env.rank, env.world_size);
  }
  if (env.rank == 0 && !recipe.data.val.empty() && recipe.data.val != kRandomData) {
    data::TokenFileNeeds needs;
    needs.key = "data.val";
    needs.min_tokens = T + 1;
    needs.min_tokens_fix =
        "lower data.seq_len or hold out more validation text (infllm prepare --val-docs N)";
    needs.vocab_limit = recipe.model.vocab_size;
    data::check_token_file(recipe.data.val, needs);
  }
}

}  // namespace infllm::train
