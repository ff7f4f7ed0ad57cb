// Which tokenizer a model's token ids belong to, and the Hugging Face files that carry it
// through import, finetuning and export (docs/interop.md, "Tokenizers").
//
// `infllm import DIR -o CKPT` copies DIR's tokenizer files into the sidecar folder beside the
// checkpoint (imported.h5 -> imported.tokenizer/) and records the tokenizer's id in the
// checkpoint's `tokenizer` attribute. A run's checkpoints carry no tokenizer of their own: they
// speak the tokenizer of the model their weights started from (train.init_from: hf:DIR, or a
// checkpoint, followed recursively). A model trained from scratch speaks the byte tokenizer.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "train/checkpoint.h"

namespace infllm::train {

// config.json's special token ids, as JSON values (a number, a list of numbers, or null).
struct SpecialTokenIds {
  std::string bos = "256";  // the byte tokenizer's (data/byte_tokenizer.h)
  std::string eos = "257";
  std::string pad = "null";
};

struct ModelTokenizer {
  std::string id = "byte";  // "byte", or hf-tokenizer:<16 hex> (data/hf_tokenizer.h)
  std::string dir;          // holds tokenizer.json and the others; empty for the byte tokenizer
  SpecialTokenIds ids;
  std::string found;  // how it was found, for messages
  bool is_byte() const { return dir.empty(); }
};

// The files copied with a tokenizer, when present: tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, ..., generation_config.json (it carries the stop tokens).
const std::vector<std::string>& tokenizer_file_names();

// The tokenizer of a Hugging Face model folder or of a sidecar, or nullopt when `dir` has no
// tokenizer.json. Its ids come from special_token_ids.json (a sidecar), else config.json,
// else generation_config.json.
std::optional<ModelTokenizer> folder_tokenizer(const std::string& dir);

// "out/imported.h5" -> "out/imported.tokenizer".
std::string tokenizer_sidecar(const std::string& checkpoint_path);

// Copies `tokenizer`'s files (and special_token_ids.json) into the sidecar of
// `checkpoint_path`, replacing an earlier sidecar whole: written beside it, then renamed.
void save_tokenizer_sidecar(const ModelTokenizer& tokenizer, const std::string& checkpoint_path);
// Deletes the sidecar of `checkpoint_path`, if any (an import of a model without tokenizer
// files over an earlier one).
void remove_tokenizer_sidecar(const std::string& checkpoint_path);

struct TokenizerLookup {
  std::optional<ModelTokenizer> tokenizer;
  std::string unknown;  // why none was found (with the fix), when tokenizer is empty
  // The byte tokenizer by default, not by evidence: the model (or the one its chain starts
  // from) was trained from scratch on data whose tokenizer could not be read (random tokens,
  // or a file since moved). Good enough to decode with; not to refuse a run over.
  bool byte_assumed = false;
};

// The tokenizer of the checkpoint at `path`, whose string attributes are `strings`: its
// sidecar when its
// `tokenizer` attribute names one, else that of its recipe's train.init_from, else - for a
// model never imported - the byte tokenizer. When the recipe's data.train is a token file that
// can be read, its `tokenizer` attribute must agree (an infllm::Error naming both otherwise).
TokenizerLookup checkpoint_tokenizer(const std::string& path,
                                     const std::map<std::string, std::string>& strings);

// `spec` given on the command line: "byte" or a folder with tokenizer.json.
ModelTokenizer named_tokenizer(const std::string& spec);

// The tokenizer's files in an export folder: copies of the originals, or the byte tokenizer's
// tokenizer.json, tokenizer_config.json and special_tokens_map.json.
void write_tokenizer_files(const ModelTokenizer& tokenizer, const std::string& dir);

// The ids of a JSON value of SpecialTokenIds ("2", "[1, 2]", "null" -> {}, {2}, {1, 2}).
std::vector<int64_t> token_id_list(const std::string& json_value);

}  // namespace infllm::train
