// Tokenizer files through import, finetuning and export, and generate with a Hugging Face
// tokenizer (train/tokenizer_files.h, train/text_tokenizer.h), on model folders the test
// writes itself: no Python. (tests/data/check_prepare_hf.py runs the same paths with
// tokenizers the `tokenizers` library trains, and real runs.)
#include "train/tokenizer_files.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "autograd/node.h"
#include "data/byte_tokenizer.h"
#include "data/hf_tokenizer.h"
#include "data/json.h"
#include "data/token_file.h"
#include "layers/transformer.h"
#include "tests/data/test_util.h"
#include "tests/train/infllm_cli.h"
#include "train/hf_model.h"
#include "train/load_model.h"
#include "train/preflight.h"
#include "train/safetensors.h"

namespace infllm::train {
namespace {

namespace fs = std::filesystem;
using data::testing::expect_error;
using data::testing::TempDir;
using testing::read_bytes;

// A 40-token byte-level vocabulary: specials 0-2, then letters and "Ġ"-words.
const char* kTokenizerJson = R"({
  "version": "1.0",
  "added_tokens": [{"id": 0, "content": "<s>", "special": true},
                   {"id": 1, "content": "</s>", "special": true},
                   {"id": 2, "content": "<|eot|>", "special": true}],
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "merges": [], "vocab": {
    "<s>": 0, "</s>": 1, "<|eot|>": 2, "a": 3, "b": 4, "c": 5, "d": 6, "e": 7, "f": 8, "g": 9,
    "h": 10, "i": 11, "j": 12, "k": 13, "l": 14, "m": 15, "n": 16, "o": 17, "p": 18, "q": 19,
    "r": 20, "s": 21, "t": 22, "u": 23, "v": 24, "w": 25, "x": 26, "y": 27, "z": 28, "Ġ": 29,
    "Ġthe": 30, "Ġa": 31, "Ċ": 32, ".": 33, ",": 34, "Ã©": 35, "ðŁĺ": 36, "Ģ": 37, "Ġis": 38,
    "Ġof": 39}}
})";

ModelConfig tiny() {
  ModelConfig c;
  c.vocab_size = 40;
  c.d_model = 16;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 8;
  c.ffn_hidden = 24;
  return with_derived_sizes(c);
}

void write(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

// A Hugging Face model folder: weights of a random tiny model, config.json with its special
// token ids, and (when `tokenizer`) tokenizer.json, tokenizer_config.json,
// generation_config.json.
void write_model_folder(const fs::path& dir, bool tokenizer) {
  fs::create_directories(dir);
  const ModelConfig c = tiny();
  TransformerLM model(c, 5, Device::cpu(), DType::f32);
  std::map<std::string, Tensor> params;
  for (auto& [name, param] : model.named_parameters()) params[name] = *param;
  write_safetensors((dir / "model.safetensors").string(), to_hf_weights(c, params), DType::f32,
                    {{"format", "pt"}});
  write(dir / "config.json", hf_config_json(c, "float32", "", {"0", "[1, 2]", "null"}));
  if (!tokenizer) return;
  write(dir / "tokenizer.json", kTokenizerJson);
  write(dir / "tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": "</s>"})");
  write(dir / "generation_config.json", R"({"bos_token_id": 0, "eos_token_id": [1, 2]})");
}

const std::vector<std::string> kCopied = {"tokenizer.json", "tokenizer_config.json",
                                          "generation_config.json"};

void expect_same_files(const fs::path& a, const fs::path& b) {
  for (const std::string& name : kCopied) {
    ASSERT_TRUE(fs::exists(b / name)) << b / name;
    EXPECT_EQ(read_bytes(a / name), read_bytes(b / name)) << name;
  }
}

TEST(TokenizerFiles, ImportCopiesThemAndExportHandsThemBack) {
  TempDir dir;
  write_model_folder(dir.path() / "model", true);
  const std::string ckpt = dir.file("imported.h5");
  const auto imported = testing::run("import " + dir.file("model") + " -o " + ckpt);
  ASSERT_EQ(imported.exit_code, 0) << imported.output;
  const fs::path sidecar = dir.path() / "imported.tokenizer";
  EXPECT_EQ(tokenizer_sidecar(ckpt), sidecar.string());
  expect_same_files(dir.path() / "model", sidecar);
  const CheckpointState state = load_checkpoint(ckpt, Device::cpu(), kMasterPrefix);
  EXPECT_EQ(state.require_string("tokenizer"), data::hf_tokenizer_id(kTokenizerJson));
  const TokenizerLookup found = checkpoint_tokenizer(ckpt, state.strings);
  ASSERT_TRUE(found.tokenizer) << found.unknown;
  EXPECT_EQ(found.tokenizer->ids.bos, "0");
  EXPECT_EQ(found.tokenizer->ids.eos, "[1, 2]");

  const auto exported = testing::run("export " + ckpt + " -o " + dir.file("exported"));
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  expect_same_files(dir.path() / "model", dir.path() / "exported");
  const YAML::Node config = data::read_json_file(dir.file("exported/config.json"));
  EXPECT_EQ(config["bos_token_id"].as<int>(), 0);
  EXPECT_EQ(config["eos_token_id"].as<std::vector<int>>(), (std::vector<int>{1, 2}));

  // Importing a folder without tokenizer files over it takes the old sidecar away.
  write_model_folder(dir.path() / "bare", false);
  const auto bare = testing::run("import " + dir.file("bare") + " -o " + ckpt);
  ASSERT_EQ(bare.exit_code, 0) << bare.output;
  EXPECT_FALSE(fs::exists(sidecar));
  const auto unknown = testing::run("export " + ckpt + " -o " + dir.file("exported_bare"));
  ASSERT_EQ(unknown.exit_code, 0) << unknown.output;
  EXPECT_NE(unknown.output.find("no tokenizer files written"), std::string::npos) << unknown.output;
  EXPECT_FALSE(fs::exists(dir.path() / "exported_bare" / "tokenizer.json"));
}

// The ids `generate --no-cache --temperature 0` continues `prompt` with, computed here.
std::vector<int32_t> greedy(const std::string& ckpt, std::vector<int32_t> tokens, int steps,
                            const std::vector<int32_t>& stop) {
  autograd::NoGradGuard no_grad;
  const LoadedModel loaded = load_model(ckpt, "cpu");
  std::vector<int32_t> out;
  for (int i = 0; i < steps; ++i) {
    const Tensor input = Tensor::from_vector(tokens, {1, int64_t(tokens.size())});
    const std::vector<float> logits = loaded.model->last_logits(input).to_vector<float>();
    const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (std::find(stop.begin(), stop.end(), next) != stop.end()) break;
    tokens.push_back(next);
    out.push_back(next);
  }
  return out;
}

TEST(TokenizerFiles, GenerateDecodesWithTheImportedTokenizer) {
  TempDir dir;
  write_model_folder(dir.path() / "model", true);
  const std::string ckpt = dir.file("imported.h5");
  ASSERT_EQ(testing::run("import " + dir.file("model") + " -o " + ckpt).exit_code, 0);
  const std::vector<int32_t> prompt = {0, 10, 11, 38, 35, 36, 37};  // <s> h i Ġis Ã© ðŁĺ Ģ
  const data::HfTokenizer tokenizer(kTokenizerJson, "tokenizer.json");
  std::string expected = "hi is\xC3\xA9\xF0\x9F\x98\x80";
  EXPECT_EQ(tokenizer.decode(std::vector<uint32_t>(prompt.begin(), prompt.end())), expected);
  for (const int32_t id : greedy(ckpt, prompt, 12, {1, 2})) expected += tokenizer.token_bytes(id);
  const auto generated = testing::run("generate " + ckpt +
                                      " --prompt-ids 0,10,11,38,35,36,37 --tokens 12 "
                                      "--temperature 0 --no-cache --device cpu");
  ASSERT_EQ(generated.exit_code, 0) << generated.output;
  EXPECT_EQ(generated.output, expected + "\n");

  const auto text = testing::run("generate " + ckpt + " --prompt hi --device cpu");
  EXPECT_NE(text.exit_code, 0);
  EXPECT_NE(text.output.find("--prompt-ids"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find(data::hf_tokenizer_id(kTokenizerJson)), std::string::npos);
  const auto outside = testing::run("generate " + ckpt + " --prompt-ids 0,40 --device cpu");
  EXPECT_NE(outside.exit_code, 0);
  EXPECT_NE(outside.output.find("'40' is not a token id in [0, 40)"), std::string::npos)
      << outside.output;
}

// A checkpoint's string attributes for a run of `model` from `init_from` on `data_train`.
std::map<std::string, std::string> run_strings(const fs::path& model, const std::string& init_from,
                                               const std::string& data_train) {
  HfModel hf;
  hf.config = tiny();
  Recipe recipe = imported_recipe(hf, model.string());
  recipe.train.init_from = init_from;
  recipe.data.train = data_train;
  return {{"recipe", recipe_to_yaml(recipe)}};
}

void write_token_file(const std::string& path, const std::string& tokenizer) {
  data::TokenFileWriter writer(path, {40, tokenizer, "test"});
  writer.append_document(std::vector<uint32_t>{0, 3, 4, 1});
  writer.close();
}

TEST(TokenizerFiles, LookupFollowsInitFromAndChecksTheData) {
  TempDir dir;
  const fs::path model = dir.path() / "model";
  write_model_folder(model, true);
  const std::string id = data::hf_tokenizer_id(kTokenizerJson);
  const std::string hf_data = dir.file("hf.h5"), byte_data = dir.file("byte.h5");
  write_token_file(hf_data, id);
  write_token_file(byte_data, "byte");

  // Finetuned from hf:DIR on data of its tokenizer.
  TokenizerLookup found =
      checkpoint_tokenizer(dir.file("run.h5"), run_strings(model, "hf:" + model.string(), hf_data));
  ASSERT_TRUE(found.tokenizer) << found.unknown;
  EXPECT_EQ(found.tokenizer->id, id);
  EXPECT_EQ(found.tokenizer->dir, model.string());
  EXPECT_NE(found.tokenizer->found.find("train.init_from=hf:"), std::string::npos);
  // ... on data of another tokenizer: refused, naming both.
  expect_error(
      [&] {
        checkpoint_tokenizer(dir.file("run.h5"),
                             run_strings(model, "hf:" + model.string(), byte_data));
      },
      {id, "byte", byte_data, "--tokenizer"});
  // From scratch on byte data, or on data that is not there: the byte tokenizer.
  for (const std::string& data : {byte_data, dir.file("gone.h5")}) {
    found = checkpoint_tokenizer(dir.file("run.h5"), run_strings(model, "", data));
    ASSERT_TRUE(found.tokenizer) << found.unknown;
    EXPECT_TRUE(found.tokenizer->is_byte());
    EXPECT_EQ(found.tokenizer->ids.eos, "257");
    EXPECT_EQ(found.byte_assumed, data != byte_data);  // no data to tell
  }
  // From scratch on data of a Hugging Face tokenizer: unknown, with the fix.
  found = checkpoint_tokenizer(dir.file("run.h5"), run_strings(model, "", hf_data));
  EXPECT_FALSE(found.tokenizer);
  EXPECT_NE(found.unknown.find(id), std::string::npos) << found.unknown;
  EXPECT_NE(found.unknown.find("--tokenizer"), std::string::npos) << found.unknown;
  // From an hf:DIR without tokenizer.json.
  found = checkpoint_tokenizer(dir.file("run.h5"),
                               run_strings(model, "hf:" + dir.file("nothing"), hf_data));
  EXPECT_FALSE(found.tokenizer);
  EXPECT_NE(found.unknown.find("no tokenizer.json"), std::string::npos) << found.unknown;
  // An imported checkpoint whose sidecar holds another tokenizer than it recorded.
  auto strings = run_strings(model, "", "");
  strings["tokenizer"] = "hf-tokenizer:0123456789abcdef";
  fs::create_directories(dir.path() / "imported.tokenizer");
  fs::copy_file(model / "tokenizer.json", dir.path() / "imported.tokenizer" / "tokenizer.json");
  found = checkpoint_tokenizer(dir.file("imported.h5"), strings);
  EXPECT_FALSE(found.tokenizer);
  EXPECT_NE(found.unknown.find("hf-tokenizer:0123456789abcdef"), std::string::npos);
  EXPECT_NE(found.unknown.find(id), std::string::npos) << found.unknown;
}

TEST(TokenizerFiles, ExportOfAByteModelWritesTheByteTokenizer) {
  TempDir dir;
  HfModel hf;
  hf.config = tiny();
  hf.config.vocab_size = data::ByteTokenizer::kVocabSize;
  CheckpointState state;
  state.strings["recipe"] = recipe_to_yaml(imported_recipe(hf, "scratch"));
  TransformerLM model(hf.config, 3, Device::cpu(), DType::f32);
  for (auto& [name, param] : model.named_parameters())
    state.tensors.emplace_back(kMasterPrefix + name, *param);
  save_checkpoint(dir.file("byte.h5"), state);
  const auto exported = testing::run("export " + dir.file("byte.h5") + " -o " + dir.file("out"));
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  EXPECT_EQ(read_bytes(dir.path() / "out" / "tokenizer.json"), data::byte_tokenizer_json());
  EXPECT_EQ(read_bytes(dir.path() / "out" / "tokenizer_config.json"),
            data::byte_tokenizer_config_json());
  const YAML::Node config = data::read_json_file(dir.file("out/config.json"));
  EXPECT_EQ(config["bos_token_id"].as<int>(), 256);
  EXPECT_EQ(config["eos_token_id"].as<int>(), 257);
  // --tokenizer names another one.
  write_model_folder(dir.path() / "model", true);
  const auto named = testing::run("export " + dir.file("byte.h5") + " -o " + dir.file("out2") +
                                  " --tokenizer " + dir.file("model"));
  ASSERT_EQ(named.exit_code, 0) << named.output;
  expect_same_files(dir.path() / "model", dir.path() / "out2");
  const auto missing = testing::run("export " + dir.file("byte.h5") + " -o " + dir.file("out3") +
                                    " --tokenizer " + dir.file("nothing"));
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("no tokenizer.json"), std::string::npos) << missing.output;
}

// A token file of `n` tokens (ids 3..39, valid for every vocabulary here) in one document.
void write_tokens(const std::string& path, const std::string& tokenizer, int64_t vocab_size,
                  int n = 64) {
  data::TokenFileWriter writer(path, {vocab_size, tokenizer, "test"});
  std::vector<uint32_t> tokens(n);
  for (int i = 0; i < n; ++i) tokens[i] = uint32_t(3 + i % 37);
  writer.append_document(tokens);
  writer.close();
}

// A one-step CPU finetune of the tiny model from `init_from` on `train` and `val`.
Recipe finetune(const fs::path& model, const std::string& init_from, const std::string& train,
                const std::string& val, const std::string& out_dir) {
  HfModel hf;
  hf.config = tiny();
  Recipe recipe = imported_recipe(hf, model.string());
  recipe.train.init_from = init_from;
  recipe.data.train = train;
  recipe.data.val = val;
  recipe.data.seq_len = 8;
  recipe.data.batch_size = 1;
  recipe.train.steps = 1;
  recipe.train.out_dir = out_dir;
  recipe.train.device = DeviceChoice::cpu;
  recipe.checkpoint.every = 1;
  recipe.log.progress = false;
  return recipe;
}

void expect_all(const std::string& text, const std::vector<std::string>& parts) {
  for (const std::string& part : parts)
    EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

// A model folder with a Hugging Face tokenizer, and token files of its tokenizer (hf.h5) and of
// the byte tokenizer (byte.h5): the two sides of the preflight's tokenizer check.
struct TokenizerMismatch {
  TempDir dir;
  fs::path model = dir.path() / "model";
  std::string id = data::hf_tokenizer_id(kTokenizerJson);
  std::string hf_data = dir.file("hf.h5"), byte_data = dir.file("byte.h5");
  TokenizerMismatch() {
    write_model_folder(model, true);
    write_tokens(hf_data, id, 40);
    write_tokens(byte_data, "byte", data::ByteTokenizer::kVocabSize);
  }
};

TEST(TokenizerFiles, TrainRefusesDataOfAnotherTokenizerBeforeStepOne) {
  const TokenizerMismatch m;
  const TempDir& dir = m.dir;
  const fs::path& model = m.model;
  const std::string &id = m.id, &hf_data = m.hf_data, &byte_data = m.byte_data;
  const std::string init = "hf:" + model.string(), out = dir.file("run");
  auto train = [&](const Recipe& recipe) {
    write(dir.path() / "recipe.yaml", recipe_to_yaml(recipe));
    return testing::run("train " + dir.file("recipe.yaml"));
  };

  // Byte data for a model of a Hugging Face tokenizer (its vocabulary is larger than the
  // model's too, but the tokenizer is what the message says): refused, nothing written.
  const auto refused = train(finetune(model, init, byte_data, hf_data, out));
  EXPECT_NE(refused.exit_code, 0);
  expect_all(refused.output, {"data.train: '" + byte_data + "' holds ids of tokenizer byte",
                              "train.init_from=" + init + " speaks tokenizer " + id + " (" +
                                  (model / "tokenizer.json").string() + ")",
                              "scripts/prepare-hf --tokenizer " + model.string()});
  EXPECT_FALSE(fs::exists(fs::path(out) / "metrics.jsonl"));
  EXPECT_FALSE(fs::exists(fs::path(out) / "checkpoints"));
  const auto val = train(finetune(model, init, hf_data, byte_data, out));
  EXPECT_NE(val.exit_code, 0);
  expect_all(val.output, {"data.val: '" + byte_data + "'", id});

  // The model's own tokenizer trains.
  const auto trained = train(finetune(model, init, hf_data, hf_data, out));
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  // A finetune of that run inherits hf:DIR's tokenizer through its checkpoint.
  const std::string latest = out + "/checkpoints/latest";
  const auto chained = train(finetune(model, latest, byte_data, "", dir.file("run2")));
  EXPECT_NE(chained.exit_code, 0);
  expect_all(chained.output,
             {"train.init_from=" + latest + " speaks tokenizer " + id, "train.init_from=" + init});
}

TEST(TokenizerFiles, PreflightChecksCheckpointsAndIsSilentWhenEitherSideIsUnknown) {
  const TokenizerMismatch m;
  const TempDir& dir = m.dir;
  const fs::path& model = m.model;
  const std::string &id = m.id, &hf_data = m.hf_data, &byte_data = m.byte_data;
  // A checkpoint of a run (the lookup reads its recipe, not its weights).
  auto run_checkpoint = [&](const std::string& name, const std::string& init_from,
                            const std::string& data_train) {
    CheckpointState state;
    state.strings = run_strings(model, init_from, data_train);
    save_checkpoint(dir.file(name), state);
    return dir.file(name);
  };
  auto check = [&](const std::string& init_from, const std::string& train) {
    check_data_tokenizers(finetune(model, init_from, train, "", dir.file("run")), true);
  };

  // A model trained from scratch on byte data speaks the byte tokenizer.
  const std::string scratch = run_checkpoint("scratch.h5", "", byte_data);
  check(scratch, byte_data);
  expect_error([&] { check(scratch, hf_data); },
               {"data.train: '" + hf_data + "' holds ids of tokenizer " + id,
                "speaks tokenizer byte", scratch, "infllm prepare -o"});
  // An imported checkpoint speaks the tokenizer beside it.
  ASSERT_EQ(testing::run("import " + model.string() + " -o " + dir.file("imported.h5")).exit_code,
            0);
  check(dir.file("imported.h5"), hf_data);
  expect_error([&] { check(dir.file("imported.h5"), byte_data); },
               {"speaks tokenizer " + id, "the files imported beside",
                "scripts/prepare-hf --tokenizer " + dir.file("imported.tokenizer")});

  // Unknown model tokenizers: from scratch on data that is gone or random (byte only by
  // default), hf:DIR without tokenizer.json, a checkpoint that does not read.
  for (const std::string& data : {dir.file("gone.h5"), std::string(kRandomData)})
    check(run_checkpoint("assumed.h5", "", data), hf_data);
  write_model_folder(dir.path() / "bare", false);
  check("hf:" + dir.file("bare"), byte_data);
  write(dir.path() / "junk.h5", "not a checkpoint");
  check(dir.file("junk.h5"), hf_data);
  // Unknown data tokenizers: one infllm does not know, random tokens, no file.
  const std::string other = dir.file("other.h5");
  write_tokens(other, "sentencepiece:custom", 40);
  for (const std::string& data : {other, std::string(kRandomData), dir.file("gone.h5")})
    check("hf:" + model.string(), data);
}

}  // namespace
}  // namespace infllm::train
