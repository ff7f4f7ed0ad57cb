// infllm export CKPT -o DIR | infllm import DIR -o CKPT | infllm logits MODEL --tokens ...
// Hugging Face Llama interop (docs/interop.md).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "autograd/node.h"
#include "core/ops.h"
#include "train/cli_args.h"
#include "train/commands.h"
#include "train/hf_model.h"
#include "train/load_model.h"
#include "train/run_setup.h"
#include "train/tokenizer_files.h"

namespace infllm::train {
namespace fs = std::filesystem;
namespace {

constexpr const char* kExportHelp = R"(usage: infllm export CHECKPOINT -o DIR [options]

Writes a checkpoint as a Hugging Face LlamaForCausalLM folder: model.safetensors,
config.json (the sparse settings under infllm_attention), generation_config.json and the
tokenizer files: the byte tokenizer's as tokenizer.json, or the ones of the model the weights
came from (imported beside the checkpoint, or train.init_from's).
  -o DIR               the folder (created; existing files of these names are replaced)
  --dtype D            f32 (default: the master weights exactly) or bf16
  --tokenizer T        byte, or a folder with tokenizer.json: the tokenizer to write instead
                       of the one the checkpoint records
)";

constexpr const char* kImportHelp = R"(usage: infllm import DIR -o CHECKPOINT

Reads a Hugging Face LlamaForCausalLM folder (config.json, model.safetensors or its shards)
and writes an infllm checkpoint of its weights (masters only, step 0) that eval, generate,
logits and train.init_from take. train.init_from=hf:DIR reads the folder directly.
The folder's tokenizer files (tokenizer.json, ...) are copied beside the checkpoint
(imported.h5 -> imported.tokenizer/), where export and generate find them.
)";

constexpr const char* kLogitsHelp = R"(usage: infllm logits MODEL --tokens ID,ID,... [options]

Next-token logits (f32) at every position of one token sequence, as JSON
{"tokens": [...], "logits": [[...], ...]}. MODEL is a checkpoint, RUN/checkpoints/latest or
hf:DIR (a Hugging Face Llama folder).
  --tokens IDS         comma-separated token ids
  --attention MODE     dense | sparse | auto (default: the model's)
  --json FILE          write the JSON to FILE instead of stdout
  --device D           auto | cpu | cuda | cuda:N (default cpu)
)";

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.flush();
  INFLLM_CHECK(out.good(), path.string(), ": cannot write it");
}

// A checkpoint or hf:DIR as a model on `device`.
LoadedModel load_any_model(const std::string& spec, const std::string& device) {
  if (!spec.starts_with("hf:")) return load_model(spec, device);
  HfModel hf = read_hf_model(spec);
  LoadedModel loaded;
  loaded.recipe = imported_recipe(hf, spec);
  loaded.device = parse_device(device);
  const DType dtype = compute_dtype(loaded.recipe, loaded.device);
  loaded.model = std::make_unique<TransformerLM>(loaded.recipe.model, 0, loaded.device, dtype);
  for (auto& [name, param] : loaded.model->named_parameters())
    copy_into(ops::cast(hf.weights.at(name).to(loaded.device), dtype), *param);
  return loaded;
}

// "-o DIR" spelled out as --output, the way parse_cli takes options (as prepare does).
CliArgs parse_with_output(const std::string& command, int argc, char** argv,
                          const std::set<std::string>& valued) {
  std::vector<std::string> spelled(argv, argv + argc);
  for (std::string& arg : spelled) arg = arg == "-o" ? "--output" : arg;
  std::vector<char*> spelled_argv;
  for (std::string& arg : spelled) spelled_argv.push_back(arg.data());
  return parse_cli(command, argc, spelled_argv.data(), valued, {});
}

std::vector<int32_t> parse_tokens(const std::string& text, int64_t vocab) {
  std::vector<int32_t> tokens;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const long value = std::strtol(item.c_str(), &end, 10);
    INFLLM_CHECK(!item.empty() && *end == '\0' && value >= 0 && value < vocab,
                 "infllm logits --tokens: '", item, "' is not a token id in [0, ", vocab, ")");
    tokens.push_back(int32_t(value));
  }
  INFLLM_CHECK(!tokens.empty(), "infllm logits --tokens: no token ids");
  return tokens;
}

}  // namespace

int export_command(int argc, char** argv) {
  CliArgs args = parse_with_output("export", argc, argv, {"--output", "--dtype", "--tokenizer"});
  if (args.has("--help") || args.positionals.size() != 1 || !args.has("--output")) {
    std::fputs(kExportHelp, args.has("--help") ? stdout : stderr);
    return args.has("--help") ? 0 : 2;
  }
  const std::string dtype_text = args.get("--dtype", "f32");
  INFLLM_CHECK(dtype_text == "f32" || dtype_text == "bf16", "infllm export --dtype: '", dtype_text,
               "' is neither f32 nor bf16");
  const DType dtype = dtype_text == "f32" ? DType::f32 : DType::bf16;
  const std::string path = resolve_checkpoint_path(args.positionals[0]);
  const CheckpointState state = load_checkpoint(path, Device::cpu(), kMasterPrefix);
  const auto recipe_text = state.strings.find("recipe");
  INFLLM_CHECK(recipe_text != state.strings.end(), path,
               ": no `recipe` attribute (not a checkpoint written by infllm?)");
  const Recipe recipe = recipe_from_yaml(recipe_text->second, path + " (saved recipe)", {false});
  const auto weights = to_hf_weights(recipe.model, master_weights(state));
  std::optional<ModelTokenizer> tokenizer;
  std::string no_tokenizer;
  if (args.has("--tokenizer")) {
    tokenizer = named_tokenizer(args.get("--tokenizer", ""));
  } else {
    TokenizerLookup lookup = checkpoint_tokenizer(path, state.strings);
    tokenizer = std::move(lookup.tokenizer);
    no_tokenizer = std::move(lookup.unknown);
  }
  const SpecialTokenIds ids = tokenizer ? tokenizer->ids : SpecialTokenIds{"null", "null", "null"};
  const fs::path dir = args.get("--output", "");
  fs::create_directories(dir);
  // transformers refuses safetensors without format=pt in their metadata.
  write_safetensors((dir / "model.safetensors").string(), weights, dtype, {{"format", "pt"}});
  write_text(dir / "config.json",
             hf_config_json(recipe.model, dtype == DType::f32 ? "float32" : "bfloat16",
                            attention_json(recipe), ids));
  // A copied generation_config.json (the model's own stop tokens) replaces this one.
  write_text(dir / "generation_config.json", hf_generation_config_json(ids));
  if (tokenizer) write_tokenizer_files(*tokenizer, dir.string());
  std::fprintf(stderr, "infllm export: %s (step %lld) -> %s: %zu tensors, %s\n", path.c_str(),
               (long long)state.step, dir.c_str(), weights.size(), dtype_text.c_str());
  if (tokenizer) {
    std::fprintf(stderr, "infllm export: tokenizer %s, from %s\n", tokenizer->id.c_str(),
                 tokenizer->found.c_str());
  } else {
    std::fprintf(stderr, "infllm export: no tokenizer files written: %s\n", no_tokenizer.c_str());
  }
  return 0;
}

int import_command(int argc, char** argv) {
  CliArgs args = parse_with_output("import", argc, argv, {"--output"});
  if (args.has("--help") || args.positionals.size() != 1 || !args.has("--output")) {
    std::fputs(kImportHelp, args.has("--help") ? stdout : stderr);
    return args.has("--help") ? 0 : 2;
  }
  const std::string dir = strip_hf_prefix(args.positionals[0]);
  const HfModel hf = read_hf_model(dir);
  CheckpointState state;
  state.strings["recipe"] = recipe_to_yaml(imported_recipe(hf, dir));
  state.strings["imported_from"] = fs::absolute(dir).string();
  for (const auto& [name, tensor] : hf.weights)
    state.tensors.emplace_back(kMasterPrefix + name, tensor);
  const std::string out = args.get("--output", "");
  // The tokenizer files first: a checkpoint that records a tokenizer always has them beside it.
  const std::optional<ModelTokenizer> tokenizer = folder_tokenizer(dir);
  if (tokenizer) {
    state.strings["tokenizer"] = tokenizer->id;
    save_tokenizer_sidecar(*tokenizer, out);
  }
  save_checkpoint(out, state);
  if (!tokenizer) remove_tokenizer_sidecar(out);  // an earlier import's, no longer true
  std::fprintf(stderr, "infllm import: %s -> %s: %zu weights, %s\n", dir.c_str(), out.c_str(),
               hf.weights.size(),
               tokenizer ? ("tokenizer " + tokenizer->id + " in " + tokenizer_sidecar(out)).c_str()
                         : "no tokenizer.json (no tokenizer files)");
  return 0;
}

int logits_command(int argc, char** argv) {
  CliArgs args =
      parse_cli("logits", argc, argv, {"--tokens", "--attention", "--json", "--device"}, {});
  if (args.has("--help") || args.positionals.size() != 1 || !args.has("--tokens")) {
    std::fputs(kLogitsHelp, args.has("--help") ? stdout : stderr);
    return args.has("--help") ? 0 : 2;
  }
  autograd::NoGradGuard no_grad;
  LoadedModel loaded = load_any_model(args.positionals[0], args.get("--device", "cpu"));
  if (args.has("--attention")) {
    AttentionOptions options = loaded.model->config().attention;
    options.mode =
        from_string<attention::AttentionMode>(args.get("--attention", ""), "--attention");
    loaded.model->set_attention(options);
  }
  const std::vector<int32_t> tokens =
      parse_tokens(args.get("--tokens", ""), loaded.model->config().vocab_size);
  const int64_t T = int64_t(tokens.size()), V = loaded.model->config().vocab_size;
  const Tensor input = Tensor::from_vector(tokens, {1, T}, loaded.device);
  const std::vector<float> logits = loaded.model->logits(input).to_vector<float>();
  std::string json = "{\"tokens\": [";
  for (int64_t t = 0; t < T; ++t) json += (t ? ", " : "") + std::to_string(tokens[size_t(t)]);
  json += "], \"logits\": [";
  char buffer[32];
  for (int64_t t = 0; t < T; ++t) {
    json += t ? ", [" : "[";
    for (int64_t v = 0; v < V; ++v) {
      std::snprintf(buffer, sizeof buffer, "%s%.9g", v ? ", " : "", logits[size_t(t * V + v)]);
      json += buffer;
    }
    json += "]";
  }
  json += "]}\n";
  if (args.has("--json")) {
    write_text(args.get("--json", ""), json);
  } else {
    std::fputs(json.c_str(), stdout);
  }
  return 0;
}

}  // namespace infllm::train
