#include "train/tokenizer_files.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/byte_tokenizer.h"
#include "data/hf_tokenizer.h"
#include "data/json.h"
#include "data/token_file.h"
#include "train/hf_model.h"
#include "train/recipe.h"

namespace infllm::train {
namespace fs = std::filesystem;
namespace {

constexpr const char* kIdsFile = "special_token_ids.json";
constexpr int kMaxInitDepth = 16;  // init_from chains longer than this are a loop

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.flush();
  INFLLM_CHECK(out.good(), path.string(), ": cannot write it (disk full, or no permission?)");
}

// A special token id value (a number, a list of numbers, or null) as JSON text.
std::string id_json(const YAML::Node& node, const std::string& source, const std::string& key) {
  if (!node || node.IsNull()) return "null";
  auto number = [&](const YAML::Node& n) {
    try {
      return std::to_string(n.as<int64_t>());
    } catch (const YAML::Exception&) {
      fail(source, ": field ", key, " must be a token id or a list of them, got '",
           YAML::Dump(node), "'");
    }
  };
  if (!node.IsSequence()) return number(node);
  std::string out = "[";
  for (size_t i = 0; i < node.size(); ++i) out += (i ? ", " : "") + number(node[i]);
  return out + "]";
}

// bos/eos/pad_token_id from the first of `files` (in `dir`) that has each.
SpecialTokenIds read_ids(const fs::path& dir, const std::vector<std::string>& files) {
  SpecialTokenIds ids{"null", "null", "null"};
  std::string* targets[] = {&ids.bos, &ids.eos, &ids.pad};
  const char* keys[] = {"bos_token_id", "eos_token_id", "pad_token_id"};
  for (int k = 0; k < 3; ++k) {
    for (const std::string& name : files) {
      const fs::path path = dir / name;
      if (!fs::exists(path)) continue;
      const YAML::Node root = data::read_json_file(path.string());
      if (!data::json_has(root, keys[k])) continue;
      *targets[k] = id_json(root[keys[k]], path.string(), keys[k]);
      break;
    }
  }
  return ids;
}

// The `tokenizer` attribute of the recipe's training data, when it is a token file that reads.
std::optional<std::string> data_tokenizer(const Recipe& recipe) {
  std::error_code error;
  if (recipe.data.train.empty() || !fs::is_regular_file(recipe.data.train, error))
    return std::nullopt;
  try {
    return data::TokenFile(recipe.data.train).attributes().tokenizer;
  } catch (const Error&) {
    return std::nullopt;
  }
}

TokenizerLookup unknown(std::string why) {
  return {std::nullopt, std::move(why)};
}

TokenizerLookup lookup(const std::string& path, const std::map<std::string, std::string>& strings,
                       int depth) {
  if (const auto recorded = strings.find("tokenizer"); recorded != strings.end()) {
    const std::string sidecar = tokenizer_sidecar(path);
    std::optional<ModelTokenizer> found = folder_tokenizer(sidecar);
    if (!found)
      return unknown(path + " was imported with tokenizer " + recorded->second + ", but " +
                     sidecar + "/tokenizer.json is gone; copy the model's tokenizer files " +
                     "there, or name them with --tokenizer DIR");
    if (found->id != recorded->second)
      return unknown(sidecar + "/tokenizer.json is " + found->id + ", not the " + recorded->second +
                     " that " + path + " was imported with; restore it " +
                     "from the model's folder, or name the right one with --tokenizer DIR");
    found->found = "the files imported beside " + path;
    return {found, ""};
  }
  const auto recipe_text = strings.find("recipe");
  if (recipe_text == strings.end())
    return unknown(path + " has no recipe attribute; name the tokenizer with --tokenizer");
  const Recipe recipe = recipe_from_yaml(recipe_text->second, path + " (saved recipe)", {false});
  const std::optional<std::string> data = data_tokenizer(recipe);
  TokenizerLookup result;
  const std::string& init = recipe.train.init_from;
  if (!init.empty()) {
    if (init.starts_with("hf:")) {
      result.tokenizer = folder_tokenizer(strip_hf_prefix(init));
      if (!result.tokenizer)
        return unknown(path + " started from train.init_from=" + init + ", which has no " +
                       "tokenizer.json; name the tokenizer with --tokenizer DIR");
      result.tokenizer->found = "train.init_from=" + init;
    } else {
      if (depth >= kMaxInitDepth)
        return unknown(path + ": train.init_from goes on for more than " +
                       std::to_string(kMaxInitDepth) + " checkpoints; name the tokenizer with " +
                       "--tokenizer");
      std::string init_path;
      CheckpointState init_state;
      try {
        init_path = resolve_checkpoint_path(init);
        init_state = load_checkpoint_attributes(init_path);
      } catch (const Error& error) {
        return unknown(path + " started from train.init_from=" + init + ", which cannot be " +
                       "read (" + error.what() + "); name the tokenizer with --tokenizer");
      }
      result = lookup(init_path, init_state.strings, depth + 1);
      if (!result.tokenizer) return result;
      result.tokenizer->found = "train.init_from=" + init + ": " + result.tokenizer->found;
    }
  } else if (const auto from = strings.find("imported_from"); from != strings.end()) {
    return unknown(path + " was imported from " + from->second + " without tokenizer files " +
                   "(no tokenizer.json there); name the tokenizer with --tokenizer DIR");
  } else if (data && *data != data::ByteTokenizer::kName) {
    return unknown(path + " was trained from scratch on " + recipe.data.train + ", written " +
                   "with tokenizer " + *data + "; name that tokenizer's folder with --tokenizer");
  } else {
    result.tokenizer = ModelTokenizer{};
    result.tokenizer->found = "the byte tokenizer (" + path + " was trained from scratch)";
    result.byte_assumed = !data;
  }
  INFLLM_CHECK(!data || *data == result.tokenizer->id, path, ": the model speaks tokenizer ",
               result.tokenizer->id, " (", result.tokenizer->found, ") but was trained on ",
               recipe.data.train, ", written with tokenizer ", *data,
               "; name the tokenizer it was trained with by --tokenizer (byte or a folder)");
  return result;
}

}  // namespace

const std::vector<std::string>& tokenizer_file_names() {
  static const std::vector<std::string> names = {"tokenizer.json",
                                                 "tokenizer_config.json",
                                                 "special_tokens_map.json",
                                                 "added_tokens.json",
                                                 "tokenizer.model",
                                                 "vocab.json",
                                                 "merges.txt",
                                                 "chat_template.jinja",
                                                 "chat_template.json",
                                                 "generation_config.json"};
  return names;
}

std::optional<ModelTokenizer> folder_tokenizer(const std::string& dir) {
  const fs::path json = fs::path(dir) / "tokenizer.json";
  std::error_code error;
  if (!fs::is_regular_file(json, error)) return std::nullopt;
  ModelTokenizer tokenizer;
  tokenizer.id = data::hf_tokenizer_id(data::read_text_file(json.string()));
  tokenizer.dir = dir;
  tokenizer.ids = read_ids(dir, {kIdsFile, "config.json", "generation_config.json"});
  tokenizer.found = dir;
  return tokenizer;
}

std::string tokenizer_sidecar(const std::string& checkpoint_path) {
  const fs::path path(checkpoint_path);
  return (path.parent_path() / (path.stem().string() + ".tokenizer")).string();
}

void save_tokenizer_sidecar(const ModelTokenizer& tokenizer, const std::string& checkpoint_path) {
  INFLLM_CHECK(!tokenizer.is_byte(), "save_tokenizer_sidecar: the byte tokenizer needs no files");
  const fs::path sidecar = tokenizer_sidecar(checkpoint_path);
  const fs::path temp = sidecar.string() + ".tmp." + std::to_string(::getpid());
  std::error_code error;
  fs::remove_all(temp, error);
  fs::create_directories(temp, error);
  INFLLM_CHECK(!error, temp.string(), ": cannot create it: ", error.message());
  try {
    write_tokenizer_files(tokenizer, temp.string());
    write_file(temp / kIdsFile, "{\n  \"bos_token_id\": " + tokenizer.ids.bos +
                                    ",\n  \"eos_token_id\": " + tokenizer.ids.eos +
                                    ",\n  \"pad_token_id\": " + tokenizer.ids.pad + "\n}\n");
    fs::remove_all(sidecar);
    fs::rename(temp, sidecar);
  } catch (const std::exception& e) {
    fs::remove_all(temp, error);
    fail(sidecar.string(), ": writing the tokenizer files failed: ", e.what());
  }
}

void remove_tokenizer_sidecar(const std::string& checkpoint_path) {
  std::error_code error;
  fs::remove_all(tokenizer_sidecar(checkpoint_path), error);
  INFLLM_CHECK(!error, tokenizer_sidecar(checkpoint_path), ": cannot remove it: ", error.message());
}

TokenizerLookup checkpoint_tokenizer(const std::string& path,
                                     const std::map<std::string, std::string>& strings) {
  return lookup(path, strings, 0);
}

ModelTokenizer named_tokenizer(const std::string& spec) {
  if (spec == data::ByteTokenizer::kName) {
    ModelTokenizer byte;
    byte.found = "--tokenizer byte";
    return byte;
  }
  std::string dir = strip_hf_prefix(spec);
  if (fs::path(dir).filename() == "tokenizer.json") dir = fs::path(dir).parent_path().string();
  std::optional<ModelTokenizer> found = folder_tokenizer(dir.empty() ? "." : dir);
  INFLLM_CHECK(found.has_value(), "--tokenizer ", spec, ": no tokenizer.json in '", dir,
               "'; name `byte` or a folder holding the model's tokenizer.json");
  found->found = "--tokenizer " + spec;
  return *found;
}

void write_tokenizer_files(const ModelTokenizer& tokenizer, const std::string& dir) {
  const fs::path to(dir);
  if (tokenizer.is_byte()) {
    write_file(to / "tokenizer.json", data::byte_tokenizer_json());
    write_file(to / "tokenizer_config.json", data::byte_tokenizer_config_json());
    write_file(to / "special_tokens_map.json", data::byte_special_tokens_map_json());
    return;
  }
  for (const std::string& name : tokenizer_file_names()) {
    const fs::path from = fs::path(tokenizer.dir) / name;
    std::error_code error;
    if (!fs::is_regular_file(from, error)) continue;
    fs::copy_file(from, to / name, fs::copy_options::overwrite_existing, error);
    INFLLM_CHECK(!error, "copying ", from.string(), " to ", (to / name).string(),
                 " failed: ", error.message());
  }
}

std::vector<int64_t> token_id_list(const std::string& json_value) {
  const YAML::Node node = YAML::Load(json_value);
  std::vector<int64_t> ids;
  if (node.IsNull()) return ids;
  if (node.IsSequence()) {
    for (const YAML::Node& id : node) ids.push_back(id.as<int64_t>());
  } else {
    ids.push_back(node.as<int64_t>());
  }
  return ids;
}

}  // namespace infllm::train
