#include "train/hf_model.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "data/json.h"

namespace infllm::train {
namespace fs = std::filesystem;
using data::json_field;
using data::parse_json;
namespace {

std::string number(double value) {
  std::ostringstream out;
  out.precision(17);
  out << value;
  std::string text = out.str();
  // JSON numbers need a digit where C++ prints "1e+06"; both forms are valid, keep it a float.
  if (text.find_first_of(".eE") == std::string::npos) text += ".0";
  return text;
}

// A YAML node as JSON: scalars that read as numbers or booleans stay bare, the rest quoted.
std::string to_json(const YAML::Node& node) {
  if (node.IsMap()) {
    std::string out = "{";
    for (const auto& kv : node)
      out += (out.size() > 1 ? ", " : "") + data::json_quote(kv.first.as<std::string>()) + ": " +
             to_json(kv.second);
    return out + "}";
  }
  if (node.IsSequence()) {
    std::string out = "[";
    for (size_t i = 0; i < node.size(); ++i) out += (i ? ", " : "") + to_json(node[i]);
    return out + "]";
  }
  if (node.IsNull()) return "null";
  const std::string text = node.as<std::string>();
  if (text == "true" || text == "false") return text;
  char* end = nullptr;
  std::strtod(text.c_str(), &end);
  if (!text.empty() && end == text.c_str() + text.size() && text.find_first_of("xX") == text.npos)
    return text;
  return data::json_quote(text);
}

Tensor rows(const Tensor& t, int64_t begin, int64_t end) {
  return t.slice(0, begin, end).contiguous();
}

Tensor concat_rows(const std::vector<Tensor>& parts) {
  int64_t n = 0;
  for (const Tensor& p : parts) n += p.size(0);
  Tensor out = Tensor::empty({n, parts[0].size(1)}, DType::f32);
  char* dst = static_cast<char*>(out.data_ptr());
  for (const Tensor& p : parts) {
    const Tensor c = p.contiguous();
    std::memcpy(dst, c.data_ptr(), c.nbytes());
    dst += c.nbytes();
  }
  return out;
}

}  // namespace

std::string strip_hf_prefix(const std::string& spec) {
  return spec.starts_with("hf:") ? spec.substr(3) : spec;
}

ModelConfig model_config_from_hf(const std::string& json, const std::string& source) {
  const YAML::Node root = parse_json(json, source);
  auto has = [&](const char* key) { return root[key] && !root[key].IsNull(); };
  auto integer = [&](const char* key) {
    INFLLM_CHECK(has(key), source, ": field ", key, " is missing (a Llama config.json has it)");
    const int64_t value = json_field<int64_t>(root, source, key, "a whole number");
    INFLLM_CHECK(value > 0, source, ": field ", key, " must be positive, got ", value);
    return value;
  };
  auto require = [&](bool ok, const char* key, const std::string& problem) {
    INFLLM_CHECK(ok, source, ": field ", key, " ", problem);
  };
  const std::string model_type =
      has("model_type") ? json_field<std::string>(root, source, "model_type", "a string") : "";
  require(model_type == "llama", "model_type",
          "is '" + model_type + "'; infllm imports model_type llama (LlamaForCausalLM) only");
  ModelConfig c;
  c.vocab_size = integer("vocab_size");
  c.d_model = integer("hidden_size");
  c.n_layers = integer("num_hidden_layers");
  c.n_heads = integer("num_attention_heads");
  c.ffn_hidden = integer("intermediate_size");
  c.n_kv_heads = has("num_key_value_heads") ? integer("num_key_value_heads") : c.n_heads;
  c.head_dim = has("head_dim") ? integer("head_dim") : c.d_model / c.n_heads;
  require(has("head_dim") || c.d_model % c.n_heads == 0, "hidden_size",
          "is not a multiple of num_attention_heads and head_dim is not given");
  require(c.n_heads % c.n_kv_heads == 0, "num_key_value_heads",
          "must divide num_attention_heads (" + std::to_string(c.n_heads) + ")");
  // transformers' LlamaConfig defaults, for configs that leave these out.
  c.rope_theta =
      has("rope_theta") ? json_field<double>(root, source, "rope_theta", "a number") : 1e4;
  c.norm_eps =
      has("rms_norm_eps") ? json_field<double>(root, source, "rms_norm_eps", "a number") : 1e-6;
  c.tie_embeddings = has("tie_word_embeddings") &&
                     json_field<bool>(root, source, "tie_word_embeddings", "true or false");
  if (has("initializer_range"))
    c.init_std = json_field<double>(root, source, "initializer_range", "a number");
  // transformers 5 writes rope_parameters {rope_type, rope_theta, ...} instead of the two keys.
  if (has("rope_parameters")) {
    const YAML::Node rope = root["rope_parameters"];
    require(rope.IsMap(), "rope_parameters", "is not an object");
    const std::string type = rope["rope_type"] ? rope["rope_type"].as<std::string>() : "default";
    require(type == "default", "rope_parameters.rope_type",
            "is '" + type + "'; infllm's RoPE has no scaling: only rope_type default");
    if (rope["rope_theta"])
      c.rope_theta = json_field<double>(rope, source, "rope_theta", "a number");
  }
  require(!has("rope_scaling"), "rope_scaling",
          "is set; infllm's RoPE has no scaling (llama3, linear, dynamic, yarn): only "
          "rope_scaling null is supported");
  const std::string act =
      has("hidden_act") ? json_field<std::string>(root, source, "hidden_act", "a string") : "silu";
  require(act == "silu", "hidden_act", "is '" + act + "'; infllm's MLP is SwiGLU (silu) only");
  for (const char* key : {"attention_bias", "mlp_bias"})
    require(!has(key) || !json_field<bool>(root, source, key, "true or false"), key,
            "is true; infllm's projections have no bias");
  require(!has("pretraining_tp") || json_field<int64_t>(root, source, "pretraining_tp", "1") == 1,
          "pretraining_tp", "must be 1 (the sliced-matmul emulation is not reproduced)");
  return c;
}

std::string attention_json(const Recipe& recipe) {
  return to_json(YAML::Load(recipe_to_yaml(recipe))["attention"]);
}

std::string hf_config_json(const ModelConfig& config, const std::string& torch_dtype,
                           const std::string& infllm_attention, const SpecialTokenIds& ids) {
  const ModelConfig c = with_derived_sizes(config);
  std::ostringstream out;
  out << "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
      << "  \"hidden_size\": " << c.d_model << ",\n  \"num_hidden_layers\": " << c.n_layers
      << ",\n  \"num_attention_heads\": " << c.n_heads
      << ",\n  \"num_key_value_heads\": " << c.n_kv_heads << ",\n  \"head_dim\": " << c.head_dim
      << ",\n  \"intermediate_size\": " << c.ffn_hidden << ",\n  \"vocab_size\": " << c.vocab_size
      << ",\n  \"rope_theta\": " << number(c.rope_theta) << ",\n  \"rope_scaling\": null"
      << ",\n  \"rms_norm_eps\": " << number(c.norm_eps)
      << ",\n  \"tie_word_embeddings\": " << (c.tie_embeddings ? "true" : "false")
      << ",\n  \"hidden_act\": \"silu\",\n  \"attention_bias\": false,\n  \"mlp_bias\": false"
      << ",\n  \"attention_dropout\": 0.0,\n  \"initializer_range\": " << number(c.init_std)
      << ",\n  \"max_position_embeddings\": 131072,\n  \"bos_token_id\": " << ids.bos
      << ",\n  \"eos_token_id\": " << ids.eos << ",\n  \"pad_token_id\": " << ids.pad
      << ",\n  \"use_cache\": true,\n  \"torch_dtype\": " << data::json_quote(torch_dtype)
      << ",\n  \"infllm_attention\": " << (infllm_attention.empty() ? "null" : infllm_attention)
      << "\n}\n";
  return out.str();
}

std::string hf_generation_config_json(const SpecialTokenIds& ids) {
  return "{\n  \"bos_token_id\": " + ids.bos + ",\n  \"eos_token_id\": " + ids.eos +
         ",\n  \"pad_token_id\": " + ids.pad + ",\n  \"do_sample\": false\n}\n";
}

std::vector<std::pair<std::string, Tensor>> to_hf_weights(
    const ModelConfig& config, const std::map<std::string, Tensor>& params) {
  const ModelConfig c = with_derived_sizes(config);
  std::set<std::string> used;
  auto take = [&](const std::string& name) -> Tensor {
    const auto found = params.find(name);
    INFLLM_CHECK(found != params.end(), "export: the checkpoint has no weight ", name);
    used.insert(name);
    return found->second.detach().to(Device::cpu()).contiguous();
  };
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", take("embedding.weight"));
  const int64_t q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string ours = "blocks." + std::to_string(i) + ".";
    const std::string hf = "model.layers." + std::to_string(i) + ".";
    out.emplace_back(hf + "input_layernorm.weight", take(ours + "attention_norm.weight"));
    const Tensor qkv = take(ours + "attention.wqkv.weight");
    out.emplace_back(hf + "self_attn.q_proj.weight", rows(qkv, 0, q));
    out.emplace_back(hf + "self_attn.k_proj.weight", rows(qkv, q, q + kv));
    out.emplace_back(hf + "self_attn.v_proj.weight", rows(qkv, q + kv, q + 2 * kv));
    out.emplace_back(hf + "self_attn.o_proj.weight", take(ours + "attention.wo.weight"));
    out.emplace_back(hf + "post_attention_layernorm.weight", take(ours + "mlp_norm.weight"));
    const Tensor gate_up = take(ours + "mlp.gate_up.weight");
    out.emplace_back(hf + "mlp.gate_proj.weight", rows(gate_up, 0, c.ffn_hidden));
    out.emplace_back(hf + "mlp.up_proj.weight", rows(gate_up, c.ffn_hidden, 2 * c.ffn_hidden));
    out.emplace_back(hf + "mlp.down_proj.weight", take(ours + "mlp.down.weight"));
  }
  out.emplace_back("model.norm.weight", take("final_norm.weight"));
  if (!c.tie_embeddings) out.emplace_back("lm_head.weight", take("head.weight"));
  std::string extra;
  for (const auto& [name, tensor] : params)
    if (!used.contains(name)) extra += (extra.empty() ? "" : ", ") + name;
  INFLLM_CHECK(extra.empty(), "export: weights without a LlamaForCausalLM counterpart: ", extra,
               " (the NSA attention variant's parameters cannot be exported)");
  return out;
}

std::map<std::string, Tensor> from_hf_weights(const ModelConfig& config, const Safetensors& hf,
                                              const std::string& source) {
  const ModelConfig c = with_derived_sizes(config);
  std::map<std::string, Tensor> by_name(hf.tensors.begin(), hf.tensors.end());
  std::set<std::string> used;
  std::vector<std::string> problems;
  auto take = [&](const std::string& name, const Shape& shape) -> Tensor {
    const auto found = by_name.find(name);
    if (found == by_name.end()) {
      problems.push_back("missing:    " + name + " " + shape_str(shape));
      return Tensor::empty(shape, DType::f32);
    }
    used.insert(name);
    if (found->second.shape() != shape) {
      problems.push_back("mismatched: " + name + ": file " + shape_str(found->second.shape()) +
                         ", config.json implies " + shape_str(shape));
      return Tensor::empty(shape, DType::f32);
    }
    return found->second;
  };
  const int64_t d = c.d_model, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  std::map<std::string, Tensor> out;
  out["embedding.weight"] = take("model.embed_tokens.weight", {c.vocab_size, d});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string ours = "blocks." + std::to_string(i) + ".";
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out[ours + "attention_norm.weight"] = take(p + "input_layernorm.weight", {d});
    out[ours + "attention.wqkv.weight"] = concat_rows(
        {take(p + "self_attn.q_proj.weight", {q, d}), take(p + "self_attn.k_proj.weight", {kv, d}),
         take(p + "self_attn.v_proj.weight", {kv, d})});
    out[ours + "attention.wo.weight"] = take(p + "self_attn.o_proj.weight", {d, q});
    out[ours + "mlp_norm.weight"] = take(p + "post_attention_layernorm.weight", {d});
    out[ours + "mlp.gate_up.weight"] =
        concat_rows({take(p + "mlp.gate_proj.weight", {c.ffn_hidden, d}),
                     take(p + "mlp.up_proj.weight", {c.ffn_hidden, d})});
    out[ours + "mlp.down.weight"] = take(p + "mlp.down_proj.weight", {d, c.ffn_hidden});
  }
  out["final_norm.weight"] = take("model.norm.weight", {d});
  if (!c.tie_embeddings) {
    out["head.weight"] = take("lm_head.weight", {c.vocab_size, d});
  } else if (by_name.contains("lm_head.weight")) {
    const Tensor head = take("lm_head.weight", {c.vocab_size, d});
    if (problems.empty() && head.to_vector<float>() != out["embedding.weight"].to_vector<float>())
      problems.push_back(
          "mismatched: lm_head.weight differs from model.embed_tokens.weight "
          "although tie_word_embeddings is true");
  }
  for (const auto& [name, tensor] : by_name)
    if (!used.contains(name)) problems.push_back("unexpected: " + name);
  if (!problems.empty()) {
    std::string list;
    for (const std::string& p : problems) list += "\n  " + p;
    fail(source, ": the weights do not fit config.json's LlamaForCausalLM:", list,
         "\nIs config.json the one these weights were saved with?");
  }
  return out;
}

ModelConfig read_hf_config(const std::string& dir_spec) {
  const std::string path = (fs::path(strip_hf_prefix(dir_spec)) / "config.json").string();
  return model_config_from_hf(data::read_text_file(path), path);
}

HfModel read_hf_model(const std::string& dir_spec) {
  const std::string dir = strip_hf_prefix(dir_spec);
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const std::string text = data::read_text_file(config_path);
  HfModel model;
  model.config = model_config_from_hf(text, config_path);
  const YAML::Node root = parse_json(text, config_path);
  if (root["infllm_attention"] && root["infllm_attention"].IsMap())
    model.attention_json = to_json(root["infllm_attention"]);
  model.weights = from_hf_weights(model.config, read_safetensors_folder(dir), dir);
  return model;
}

std::vector<std::string> model_differences(const ModelConfig& recipe_model,
                                           const ModelConfig& hf_model) {
  const ModelConfig r = with_derived_sizes(recipe_model), h = with_derived_sizes(hf_model);
  std::vector<std::string> out;
  auto compare = [&](const char* key, const auto& a, const auto& b) {
    if (a == b) return;
    std::ostringstream line;
    line << std::boolalpha << "model." << key << ": recipe " << a << ", config.json " << b;
    out.push_back(line.str());
  };
  compare("vocab_size", r.vocab_size, h.vocab_size);
  compare("d_model", r.d_model, h.d_model);
  compare("n_layers", r.n_layers, h.n_layers);
  compare("n_heads", r.n_heads, h.n_heads);
  compare("n_kv_heads", r.n_kv_heads, h.n_kv_heads);
  compare("head_dim", r.head_dim, h.head_dim);
  compare("ffn_hidden", r.ffn_hidden, h.ffn_hidden);
  compare("rope_theta", r.rope_theta, h.rope_theta);
  compare("tie_embeddings", r.tie_embeddings, h.tie_embeddings);
  compare("norm_eps", r.norm_eps, h.norm_eps);
  return out;
}

Recipe imported_recipe(const HfModel& model, const std::string& dir) {
  const ModelConfig& c = model.config;
  std::ostringstream yaml;
  yaml.precision(17);
  yaml << "model:\n  vocab_size: " << c.vocab_size << "\n  d_model: " << c.d_model
       << "\n  n_layers: " << c.n_layers << "\n  n_heads: " << c.n_heads
       << "\n  n_kv_heads: " << c.n_kv_heads << "\n  head_dim: " << c.head_dim
       << "\n  ffn_hidden: " << c.ffn_hidden << "\n  rope_theta: " << number(c.rope_theta)
       << "\n  tie_embeddings: " << (c.tie_embeddings ? "true" : "false")
       << "\n  norm_eps: " << number(c.norm_eps) << "\n  init_std: " << number(c.init_std) << "\n";
  if (!model.attention_json.empty()) yaml << "attention: " << model.attention_json << "\n";
  // Placeholders: an imported model has no data or run yet; a finetune recipe sets them.
  yaml << "data:\n  train: set-data.train\n  seq_len: 2048\n  batch_size: 1\n"
       << "train:\n  steps: 1\n  out_dir: runs/imported\n  eval_every: 0\n";
  return recipe_from_yaml(yaml.str(), strip_hf_prefix(dir) + " (imported)", {false});
}

}  // namespace infllm::train
