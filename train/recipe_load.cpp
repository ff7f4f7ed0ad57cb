// load_recipe and recipe_from_yaml: YAML files, their extends chain and command-line overrides
// become one value per key, each decoded into its field and then validated.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <type_traits>

#include "core/error.h"
#include "train/recipe.h"
#include "train/recipe_schema.h"

namespace infllm::train {
namespace fs = std::filesystem;
using namespace recipe_schema;

namespace {

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

// Typed values, validated, with the derived defaults filled in.
Recipe build_recipe(const Entries& entries, const std::string& main_source,
                    const ValidateOptions& options) {
  Recipe recipe = decode_recipe(entries, main_source);
  Origins origins{main_source, {}};
  for (const auto& [key, entry] : entries) origins.by_key[key] = entry.source;
  check_recipe(recipe, origins, options);
  recipe.model = with_derived_sizes(recipe.model);
  return recipe;
}

}  // namespace

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

}  // namespace infllm::train
