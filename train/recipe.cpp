#include "train/recipe.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <type_traits>

#include "attention/infllm_v2.h"
#include "attention/nsa.h"
#include "core/config_check.h"
#include "core/error.h"
#include "train/checkpoint.h"

namespace infllm::train {
namespace fs = std::filesystem;

namespace {

// ---- The schema: every key of every section, in the order recipe_to_yaml writes them ----

struct FieldKey {
  const char* section;
  const char* name;
  bool required = false;
};

constexpr bool kRequired = true;

// A model size that ModelConfig holds as int64_t but the kernels take as int: read as an int,
// so an absurd value is an out-of-range error naming the key.
template <class I>
struct IntSized {
  I& value;
};
template <class I>
IntSized<I> int_sized(I& value) {
  return {value};
}
template <class T>
constexpr bool kIsIntSized = false;
template <class I>
constexpr bool kIsIntSized<IntSized<I>> = true;

std::string key_path(const FieldKey& key) {
  return std::string(key.section) + "." + key.name;
}

// Calls visit(FieldKey, field) for each field; R is Recipe or const Recipe. This one list drives
// parsing, writing and the unknown-key check, so a new key is added here and in the struct. It
// is also the map from keys to the libraries' structs: attention.topk is
// r.model.attention.sparse.topk, the SparseConfig the attention op and its kernels read.
template <class R, class Visit>
void visit_fields(R& r, Visit&& visit) {
  visit(FieldKey{"model", "vocab_size"}, int_sized(r.model.vocab_size));
  visit(FieldKey{"model", "d_model", kRequired}, int_sized(r.model.d_model));
  visit(FieldKey{"model", "n_layers", kRequired}, int_sized(r.model.n_layers));
  visit(FieldKey{"model", "n_heads", kRequired}, int_sized(r.model.n_heads));
  visit(FieldKey{"model", "n_kv_heads"}, int_sized(r.model.n_kv_heads));
  visit(FieldKey{"model", "head_dim"}, int_sized(r.model.head_dim));
  visit(FieldKey{"model", "ffn_hidden", kRequired}, int_sized(r.model.ffn_hidden));
  visit(FieldKey{"model", "rope_theta"}, r.model.rope_theta);
  visit(FieldKey{"model", "tie_embeddings"}, r.model.tie_embeddings);
  visit(FieldKey{"model", "norm_eps"}, r.model.norm_eps);
  visit(FieldKey{"model", "init_std"}, r.model.init_std);

  visit(FieldKey{"attention", "mode"}, r.model.attention.mode);
  visit(FieldKey{"attention", "kernel_size"}, r.model.attention.sparse.kernel_size);
  visit(FieldKey{"attention", "kernel_stride"}, r.model.attention.sparse.kernel_stride);
  visit(FieldKey{"attention", "block_size"}, r.model.attention.sparse.block_size);
  visit(FieldKey{"attention", "init_blocks"}, r.model.attention.sparse.init_blocks);
  visit(FieldKey{"attention", "window_size"}, r.model.attention.sparse.window_size);
  visit(FieldKey{"attention", "topk"}, r.model.attention.sparse.topk);
  visit(FieldKey{"attention", "dense_len"}, r.model.attention.sparse.dense_len);
  visit(FieldKey{"attention", "lse_stride"}, r.model.attention.sparse.lse_stride);
  visit(FieldKey{"attention", "variant"}, r.model.attention.variant);
  visit(FieldKey{"attention", "nsa_window"}, r.model.attention.nsa.window_size);

  visit(FieldKey{"data", "train", kRequired}, r.data.train);
  visit(FieldKey{"data", "val"}, r.data.val);
  visit(FieldKey{"data", "seq_len", kRequired}, r.data.seq_len);
  visit(FieldKey{"data", "batch_size", kRequired}, r.data.batch_size);
  visit(FieldKey{"data", "grad_accum"}, r.data.grad_accum);
  visit(FieldKey{"data", "prefetch"}, r.data.prefetch);
  visit(FieldKey{"data", "task_rate"}, r.data.task_rate);
  visit(FieldKey{"data", "task_kinds"}, r.data.task_kinds);

  visit(FieldKey{"optim", "lr"}, r.optim.lr);
  visit(FieldKey{"optim", "weight_decay"}, r.optim.weight_decay);
  visit(FieldKey{"optim", "beta1"}, r.optim.beta1);
  visit(FieldKey{"optim", "beta2"}, r.optim.beta2);
  visit(FieldKey{"optim", "eps"}, r.optim.eps);
  visit(FieldKey{"optim", "grad_clip"}, r.optim.grad_clip);
  visit(FieldKey{"optim", "no_decay"}, r.optim.no_decay);

  visit(FieldKey{"schedule", "kind"}, r.schedule.kind);
  visit(FieldKey{"schedule", "warmup_steps"}, r.schedule.warmup_steps);
  visit(FieldKey{"schedule", "min_lr_ratio"}, r.schedule.min_lr_ratio);
  visit(FieldKey{"schedule", "decay_fraction"}, r.schedule.decay_fraction);

  visit(FieldKey{"train", "steps", kRequired}, r.train.steps);
  visit(FieldKey{"train", "out_dir", kRequired}, r.train.out_dir);
  visit(FieldKey{"train", "seed"}, r.train.seed);
  visit(FieldKey{"train", "device"}, r.train.device);
  visit(FieldKey{"train", "precision"}, r.train.precision);
  visit(FieldKey{"train", "activation_checkpointing"}, r.model.activation_checkpointing);
  visit(FieldKey{"train", "recompute_attention"}, r.model.recompute_attention);
  visit(FieldKey{"train", "eval_every"}, r.train.eval_every);
  visit(FieldKey{"train", "eval_batches"}, r.train.eval_batches);
  visit(FieldKey{"train", "max_bad_steps"}, r.train.max_bad_steps);
  visit(FieldKey{"train", "init_from"}, r.train.init_from);
  visit(FieldKey{"train", "init_partial"}, r.train.init_partial);

  visit(FieldKey{"checkpoint", "every"}, r.checkpoint.every);
  visit(FieldKey{"checkpoint", "keep_last"}, r.checkpoint.keep_last);

  visit(FieldKey{"log", "every"}, r.log.every);
  visit(FieldKey{"log", "tensorboard"}, r.log.tensorboard);
  visit(FieldKey{"log", "progress"}, r.log.progress);

  visit(FieldKey{"distributed", "init"}, r.distributed.init);
  visit(FieldKey{"distributed", "zero"}, r.distributed.zero);
  visit(FieldKey{"distributed", "bucket_mb"}, r.distributed.bucket_mb);
  visit(FieldKey{"distributed", "timeout_s"}, r.distributed.timeout_s);
}

// Section names in schema order, and the key names of each.
struct Schema {
  std::vector<std::string> sections;
  std::map<std::string, std::vector<std::string>> keys;
};

const Schema& schema() {
  static const Schema instance = [] {
    Schema s;
    const Recipe defaults;
    visit_fields(defaults, [&](const FieldKey& key, const auto&) {
      if (s.keys.find(key.section) == s.keys.end()) s.sections.push_back(key.section);
      s.keys[key.section].push_back(key.name);
    });
    return s;
  }();
  return instance;
}

// ---- Messages ----

constexpr std::string_view kCommandLine = "command line";

// "in recipes/x.yaml" or "on the command line".
std::string where(std::string_view source) {
  if (source == kCommandLine) return "on the command line";
  return "in " + std::string(source);
}

// A value as the user wrote it: scalars quoted, lists and mappings in flow style.
std::string show(const YAML::Node& node) {
  if (node.IsScalar()) return "\"" + node.Scalar() + "\"";
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

std::string join(const std::vector<std::string>& words) {
  std::string text;
  for (const auto& word : words) text += (text.empty() ? "" : ", ") + word;
  return text;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The candidate nearest to `word`, or "" when none is close enough to be a likely typo. A word
// that starts with a candidate (or the reverse: "optimizer" for "optim") counts as close.
std::string closest(std::string_view word, const std::vector<std::string>& candidates) {
  const size_t limit = std::max<size_t>(2, word.size() / 3);
  std::string best;
  size_t best_distance = limit + 1;
  for (const auto& candidate : candidates) {
    const bool prefix = candidate.size() >= 3 && word.size() >= 3 &&
                        (word.starts_with(candidate) || candidate.starts_with(word));
    const size_t distance = prefix ? limit : edit_distance(word, candidate);
    if (distance < best_distance) best = candidate, best_distance = distance;
  }
  return best;
}

void check_section(const std::string& section, std::string_view source) {
  const Schema& s = schema();
  if (s.keys.count(section)) return;
  const std::string guess = closest(section, s.sections);
  fail(section, ": unknown section ", where(source), "; ",
       guess.empty() ? "the sections are " + join(s.sections) : "did you mean " + guess + "?");
}

void check_key(const std::string& section, const std::string& name, std::string_view source) {
  check_section(section, source);
  const Schema& s = schema();
  const auto& names = s.keys.at(section);
  if (std::find(names.begin(), names.end(), name) != names.end()) return;
  std::string guess = closest(name, names);
  if (!guess.empty()) guess = section + "." + guess;
  for (const auto& other : s.sections) {  // else: the right key in the wrong section
    const auto& other_names = s.keys.at(other);
    const bool found = std::find(other_names.begin(), other_names.end(), name) != other_names.end();
    if (guess.empty() && found) guess = other + "." + name;
  }
  fail(section, ".", name, ": unknown key ", where(source), "; ",
       guess.empty() ? "the keys of " + section + " are " + join(names)
                     : "did you mean " + guess + "?");
}

// ---- Loading: files and overrides -> one value per key, with where it was set ----

struct Entry {
  YAML::Node value;
  std::string source;
};
using Entries = std::map<std::string, Entry>;  // "section.key" -> value

// Parses one YAML document; `read` is YAML::Load or YAML::LoadFile, `source` names it.
template <class Read>
YAML::Node parse_yaml(Read&& read, const std::string& source) {
  try {
    return read();
  } catch (const YAML::ParserException& error) {
    fail(source, ":", error.mark.line + 1, ":", error.mark.column + 1,
         ": YAML syntax error: ", error.msg,
         "; fix the indentation or quoting near that line (a recipe is `section:` lines with "
         "indented `key: value` lines)");
  } catch (const YAML::BadFile&) {
    fail(source, ": cannot read the recipe file; check its permissions");
  }
}

std::string scalar_key(const YAML::Node& key, const std::string& parent,
                       const std::string& source) {
  if (!key.IsScalar())
    fail(parent.empty() ? "" : parent + ": ", "a key is ", show(key), " in ", source,
         "; keys are plain names such as d_model");
  return key.Scalar();
}

void load_section(const std::string& section, const YAML::Node& body, const std::string& source,
                  Entries& entries) {
  if (body.IsNull()) return;  // "section:" with nothing under it
  if (!body.IsMap())
    fail(section, ": expected a mapping of keys, got ", show(body), " in ", source,
         "; write each key on its own indented line under ", section, ":");
  std::set<std::string> seen;
  for (const auto& item : body) {
    const std::string name = scalar_key(item.first, section, source);
    check_key(section, name, source);
    if (!seen.insert(name).second)
      fail(section, ".", name, ": duplicate key in ", source, "; keep one of them");
    entries[section + "." + name] = Entry{item.second, source};
  }
}

// Adds every section of one recipe document to `entries`; `extends` is the caller's business.
void load_sections(const YAML::Node& root, const std::string& source, Entries& entries) {
  if (!root.IsNull() && !root.IsMap())
    fail(source, ": a recipe is a mapping of sections (model:, data:, train:, ...), got ",
         show(root));
  std::set<std::string> seen;
  for (const auto& item : root) {
    const std::string section = scalar_key(item.first, "", source);
    if (section == "extends") continue;
    check_section(section, source);
    if (!seen.insert(section).second)
      fail(section, ": duplicate section in ", source, "; merge the two into one");
    load_section(section, item.second, source, entries);
  }
}

// Loads `file` into `entries`, its extends chain first so that its own keys win. `chain` holds
// the canonical paths being loaded, to catch cycles.
void load_layer(const fs::path& file, const std::string& included_by, std::vector<fs::path>& chain,
                Entries& entries) {
  if (!fs::is_regular_file(file)) {
    if (included_by.empty()) fail(file.string(), ": recipe file not found; check the path");
    fail("extends: file not found: ", file.string(), " (named in ", included_by,
         "; the path is relative to that file's folder)");
  }
  const fs::path canonical = fs::weakly_canonical(file);
  if (std::find(chain.begin(), chain.end(), canonical) != chain.end()) {
    std::string cycle;
    for (const auto& link : chain) cycle += link.string() + " -> ";
    fail("extends: cycle in ", included_by, ": ", cycle, canonical.string(),
         "; remove one of these extends");
  }
  chain.push_back(canonical);
  const std::string source = file.string();
  const YAML::Node root = parse_yaml([&] { return YAML::LoadFile(source); }, source);
  if (root.IsMap() && root["extends"]) {
    const YAML::Node parent = root["extends"];
    if (!parent.IsScalar())
      fail("extends: expected one file name, got ", show(parent), " in ", source);
    load_layer((file.parent_path() / parent.Scalar()).lexically_normal(), source, chain, entries);
  }
  load_sections(root, source, entries);
  chain.pop_back();
}

void apply_override(const std::string& text, Entries& entries) {
  const size_t equals = text.find('=');
  const std::string key = text.substr(0, std::min(equals, text.size()));
  const size_t dot = key.find('.');
  if (equals == std::string::npos || dot == std::string::npos || key.find('.', dot + 1) != key.npos)
    fail("command line: override \"", text,
         "\" is not section.key=value; write it like train.steps=100");
  const std::string section = key.substr(0, dot);
  check_key(section, key.substr(dot + 1), kCommandLine);
  const std::string value = text.substr(equals + 1);
  try {
    entries[key] = Entry{YAML::Load(value), std::string(kCommandLine)};
  } catch (const YAML::ParserException& error) {
    fail(key, ": value \"", value, "\" on the command line is not valid YAML (", error.msg,
         "); quote it, or write a list as [a, b]");
  }
}

// ---- Decoding: one YAML value -> one typed field ----

[[noreturn]] void wrong_type(const std::string& key, const Entry& entry, std::string_view expected,
                             std::string_view example) {
  fail(key, ": expected ", expected, ", got ", show(entry.value), " ", where(entry.source),
       "; write it like ", key, "=", example);
}

template <class T>
void decode(const std::string& key, const Entry& entry, T& field) {
  const YAML::Node& node = entry.value;
  if constexpr (kIsIntSized<T>) {
    int value = 0;
    decode(key, entry, value);
    field.value = value;
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, field))
      wrong_type(key, entry, "true or false", "true");
  } else if constexpr (std::is_integral_v<T>) {
    const std::string text = node.IsScalar() ? node.Scalar() : "";
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), field);
    if (error == std::errc::result_out_of_range)
      fail(key, ": ", text, " is out of range ", where(entry.source), "; use a value between ",
           std::numeric_limits<T>::min(), " and ", std::numeric_limits<T>::max());
    if (text.empty() || error != std::errc() || end != text.data() + text.size())
      wrong_type(key, entry, std::is_signed_v<T> ? "an integer" : "a non-negative integer", "100");
  } else if constexpr (std::is_floating_point_v<T>) {
    const std::string text = node.IsScalar() ? node.Scalar() : "";
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), field);
    if (text.empty() || error != std::errc() || end != text.data() + text.size() ||
        !std::isfinite(field))
      wrong_type(key, entry, "a finite number", "0.001");
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!node.IsScalar()) wrong_type(key, entry, "a string", "runs/example");
    field = node.Scalar();
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    if (!node.IsSequence()) wrong_type(key, entry, "a list of strings", "[norm, embedding]");
    field.clear();
    for (const auto& item : node) {
      if (!item.IsScalar()) wrong_type(key, entry, "a list of strings", "[norm, embedding]");
      field.push_back(item.Scalar());
    }
  } else {
    static_assert(NamedEnum<T>);
    if (node.IsScalar()) {
      if (const std::optional<T> value = enum_from_string<T>(node.Scalar())) {
        field = *value;
        return;
      }
    }
    fail(key, ": ", show(node), " is not one of ", enum_choices<T>(), " ", where(entry.source),
         "; pick one of them, e.g. ", key, "=", enum_names(field).front().name);
  }
}

Recipe decode_recipe(const Entries& entries, const std::string& main_source) {
  Recipe recipe;
  visit_fields(recipe, [&](const FieldKey& key, auto&& field) {
    const std::string path = key_path(key);
    const auto it = entries.find(path);
    if (it != entries.end() && !it->second.value.IsNull()) {
      decode(path, it->second, field);
    } else if (key.required) {
      fail(path, ": missing required value ",
           it != entries.end() ? where(it->second.source)
                               : "in " + main_source + " (and the recipes it extends)",
           "; set it under ", key.section, ": in the recipe or pass ", path, "=VALUE");
    }
  });
  return recipe;
}

// ---- Writing ----

template <class T>
void emit_value(YAML::Emitter& out, const T& field) {
  if constexpr (kIsIntSized<T>) {
    out << field.value;
  } else if constexpr (std::is_same_v<T, bool>) {
    out << field;
  } else if constexpr (std::is_floating_point_v<T>) {
    out << shortest_double(field);
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    out << YAML::Flow << field;
  } else if constexpr (std::is_enum_v<T>) {
    out << std::string(enum_to_string(field));
  } else {
    out << field;
  }
}

// ---- Validation ----

// Where each key's value was set, for messages; keys never set come from `fallback`'s defaults.
struct Origins {
  std::string fallback;
  std::map<std::string, std::string> by_key;

  // Where the first of `keys` that was set explicitly came from: a rule between several keys is
  // blamed on the file that set one of them, the key the message names first.
  template <class Keys>
  std::string of(const Keys& keys) const {
    for (std::string_view key : keys) {
      const auto it = by_key.find(std::string(key));
      if (it != by_key.end()) return where(it->second);
    }
    return where(fallback);
  }
  std::string of(std::initializer_list<std::string_view> keys) const {
    return of<std::initializer_list<std::string_view>>(keys);
  }
};

class Validator {
 public:
  Validator(const Recipe& recipe, const Origins& origins, const ValidateOptions& options)
      : r_(recipe), origins_(origins), options_(options) {}

  void run() {
    check_model();
    check_attention();
    check_data();
    check_optim_and_schedule();
    check_train();
    check_distributed();
  }

 private:
  // A failed check: "<key>: <problem> in <file>; <fix>".
  template <class... Parts>
  void require(bool ok, std::string_view key, std::string_view problem, const Parts&... fix) {
    if (!ok) fail(key, ": ", problem, " ", origins_.of({key}), "; ", fix...);
  }

  // A failed rule between keys: named by keys[0], blamed on whichever of them was set.
  template <class... Parts>
  void require_related(bool ok, std::initializer_list<std::string_view> keys,
                       std::string_view problem, const Parts&... fix) {
    if (!ok) fail(*keys.begin(), ": ", problem, " ", origins_.of(keys), "; ", fix...);
  }

  template <class T>
  void positive(const std::string& key, T value) {
    require(value > 0, key, "must be positive, got " + number(value), "set ", key,
            " to a value greater than 0");
  }

  template <class T>
  void non_negative(const std::string& key, T value) {
    require(value >= 0, key, "must be 0 or more, got " + number(value), "set ", key,
            " to a value of 0 or more");
  }

  void in_range(const std::string& key, double value, double low, double high, bool open) {
    const bool ok = open ? value > low && value < high : value >= low && value <= high;
    require(ok, key,
            shortest_double(value) + " is outside " + (open ? "(" : "[") + shortest_double(low) +
                ", " + shortest_double(high) + (open ? ")" : "]"),
            "pick a value in that range");
  }

  template <class T>
  static std::string number(T value) {
    if constexpr (std::is_floating_point_v<T>) return shortest_double(value);
    return std::to_string(value);
  }

  void check_model() {
    const ModelConfig& m = r_.model;
    positive("model.vocab_size", m.vocab_size);
    positive("model.d_model", m.d_model);
    positive("model.n_layers", m.n_layers);
    positive("model.n_heads", m.n_heads);
    non_negative("model.n_kv_heads", m.n_kv_heads);
    non_negative("model.head_dim", m.head_dim);
    positive("model.ffn_hidden", m.ffn_hidden);
    positive("model.rope_theta", m.rope_theta);
    positive("model.norm_eps", m.norm_eps);
    positive("model.init_std", m.init_std);
    if (m.head_dim == 0) {
      require_related(m.d_model % m.n_heads == 0, {"model.n_heads", "model.d_model"},
                      std::to_string(m.n_heads) + " does not divide model.d_model = " +
                          std::to_string(m.d_model) + " (head_dim is 0, meaning d_model / n_heads)",
                      "pick n_heads that divides d_model, or set model.head_dim");
    }
    const int64_t head_dim = m.head_dim ? m.head_dim : m.d_model / m.n_heads;
    require_related(
        head_dim % 2 == 0, {"model.head_dim", "model.d_model", "model.n_heads"},
        m.head_dim ? std::to_string(head_dim) + " is odd"
                   : "is 0, so d_model / n_heads = " + std::to_string(head_dim) + ", which is odd",
        "RoPE rotates pairs of features: make head_dim even");
    const int64_t kv_heads = m.n_kv_heads ? m.n_kv_heads : m.n_heads;
    require_related(
        m.n_heads % kv_heads == 0, {"model.n_kv_heads", "model.n_heads"},
        std::to_string(kv_heads) + " does not divide model.n_heads = " + std::to_string(m.n_heads),
        "each group of query heads shares one KV head: pick n_kv_heads dividing n_heads");
  }

  // A library's config rules (check_sparse_config, check_schedule) reported with recipe keys:
  // `key_of` maps a struct field to its key, and the origin is the file that set one of them.
  ConfigCheck recipe_check(std::function<std::string(std::string_view)> key_of) const {
    return ConfigCheck(std::move(key_of),
                       [this](const std::vector<std::string>& keys) { return origins_.of(keys); });
  }

  void check_attention() {
    auto key_of = [](std::string_view field) { return "attention." + std::string(field); };
    attention::check_sparse_config(r_.model.attention.sparse, recipe_check(key_of));
    if (r_.model.attention.variant == attention::AttentionVariant::nsa)
      attention::check_nsa_config(r_.model.attention.nsa, r_.model.attention.sparse,
                                  recipe_check(key_of));
  }

  void check_data() {
    const DataConfig& d = r_.data;
    require(!d.train.empty(), "data.train", "is empty",
            "name a token file written by infllm prepare, or `random` for benchmarks");
    require(d.seq_len >= 2, "data.seq_len", "must be at least 2, got " + std::to_string(d.seq_len),
            "a training window needs an input token and a next token to predict");
    positive("data.batch_size", d.batch_size);
    positive("data.grad_accum", d.grad_accum);
    positive("data.prefetch", d.prefetch);
    require(d.task_rate >= 0 && d.task_rate <= 1, "data.task_rate",
            "must be in [0, 1], got " + std::to_string(d.task_rate),
            "it is the share of training windows replaced by synthetic tasks");
    for (const std::string& kind : d.task_kinds)
      require(kind == "passkey" || kind == "needle", "data.task_kinds", "holds '" + kind + "'",
              "list passkey and/or needle");
    require(d.task_rate == 0 || !d.task_kinds.empty(), "data.task_kinds", "is empty",
            "list passkey and/or needle, or set data.task_rate: 0");
    if (!options_.check_files) return;
    check_token_file("data.train", d.train,
                     "run `infllm prepare -o " + d.train + " TEXT_FILES...` to create it");
    if (!d.val.empty())
      check_token_file("data.val", d.val,
                       "infllm prepare writes NAME.val.h5 beside NAME.h5; run it, or clear "
                       "data.val (data.val=) and set train.eval_every=0");
  }

  void check_token_file(const std::string& key, const std::string& path, const std::string& fix) {
    if (path == kRandomData) return;
    require(fs::is_regular_file(path), key, "file not found: " + path, fix,
            " (relative paths start at the current directory ", fs::current_path().string(), ")");
  }

  void check_optim_and_schedule() {
    const AdamWOptions& o = r_.optim;
    const LrSchedule& s = r_.schedule;
    positive("optim.lr", o.lr);
    non_negative("optim.weight_decay", o.weight_decay);
    in_range("optim.beta1", o.beta1, 0, 1, true);
    in_range("optim.beta2", o.beta2, 0, 1, true);
    positive("optim.eps", o.eps);
    non_negative("optim.grad_clip", o.grad_clip);
    check_schedule(s, o.lr, r_.train.steps, recipe_check([](std::string_view field) {
                     if (field == "peak_lr") return std::string("optim.lr");
                     if (field == "total_steps") return std::string("train.steps");
                     return "schedule." + std::string(field);
                   }));
  }

  void check_train() {
    const TrainConfig& t = r_.train;
    positive("train.steps", t.steps);
    require(!t.out_dir.empty(), "train.out_dir", "is empty",
            "name the run folder, e.g. train.out_dir=runs/my_run");
    non_negative("train.eval_every", t.eval_every);
    positive("train.eval_batches", t.eval_batches);
    non_negative("train.max_bad_steps", t.max_bad_steps);
    require_related(t.eval_every == 0 || !r_.data.val.empty(), {"train.eval_every", "data.val"},
                    "is " + std::to_string(t.eval_every) + " but data.val is empty",
                    "set data.val to a validation token file, or train.eval_every=0");
    non_negative("checkpoint.every", r_.checkpoint.every);
    positive("checkpoint.keep_last", r_.checkpoint.keep_last);
    positive("log.every", r_.log.every);
    if (!options_.check_files || t.init_from.empty()) return;
    try {
      resolve_checkpoint_path(t.init_from);
    } catch (const Error& error) {
      require(false, "train.init_from", error.what(),
              "train the recipe that writes it first (its checkpoints land in "
              "<out_dir>/checkpoints/), or point train.init_from at a checkpoint file");
    }
  }

  void check_distributed() {
    const DistributedConfig& d = r_.distributed;
    require(d.init == "env" || (d.init.starts_with("file:") && d.init.size() > 5),
            "distributed.init", "\"" + d.init + "\" is neither env nor file:PATH",
            "use env (launcher variables such as RANK, WORLD_SIZE) or file:/shared/path");
    require(d.zero == 0 || d.zero == 1, "distributed.zero",
            "must be 0 or 1, got " + std::to_string(d.zero),
            "0 replicates optimizer state, 1 shards it across ranks");
    positive("distributed.bucket_mb", d.bucket_mb);
    positive("distributed.timeout_s", d.timeout_s);
  }

  const Recipe& r_;
  const Origins& origins_;
  const ValidateOptions& options_;
};

// Typed values, validated, with the derived defaults filled in.
Recipe build_recipe(const Entries& entries, const std::string& main_source,
                    const ValidateOptions& options) {
  Recipe recipe = decode_recipe(entries, main_source);
  Origins origins{main_source, {}};
  for (const auto& [key, entry] : entries) origins.by_key[key] = entry.source;
  Validator(recipe, origins, options).run();
  recipe.model = with_derived_sizes(recipe.model);
  return recipe;
}

}  // namespace

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

Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides,
                   const ValidateOptions& options) {
  Entries entries;
  std::vector<fs::path> chain;
  load_layer(fs::path(path), "", chain, entries);
  for (const auto& text : overrides) apply_override(text, entries);
  return build_recipe(entries, path, options);
}

Recipe recipe_from_yaml(const std::string& text, const std::string& source,
                        const ValidateOptions& options) {
  const YAML::Node root = parse_yaml([&] { return YAML::Load(text); }, source);
  if (root.IsMap() && root["extends"])
    fail("extends: not allowed in ", source,
         " (a recipe held in memory has no folder to find the parent in); write the resolved "
         "recipe with recipe_to_yaml");
  Entries entries;
  load_sections(root, source, entries);
  return build_recipe(entries, source, options);
}

std::string recipe_to_yaml(const Recipe& recipe) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string section;
  visit_fields(recipe, [&](const FieldKey& key, const auto& field) {
    if (section != key.section) {
      if (!section.empty()) out << YAML::EndMap;
      section = key.section;
      out << YAML::Key << section << YAML::Value << YAML::BeginMap;
    }
    out << YAML::Key << key.name << YAML::Value;
    emit_value(out, field);
  });
  out << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

void validate_recipe(const Recipe& recipe, const std::string& source,
                     const ValidateOptions& options) {
  const Origins origins{source, {}};
  Validator(recipe, origins, options).run();
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
