// JSON documents (config.json, tokenizer.json, ...) read with yaml-cpp: JSON is YAML 1.2, and
// yaml-cpp is already the recipes' dependency, so no second parser is linked in.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"

namespace infllm::data {

// `json` parsed; its root must be an object. Malformed text is an infllm::Error naming
// `source`. Two things yaml-cpp refuses are rewritten first, meaning unchanged: a \uD8xx\uDCxx
// escape pair (a character outside the Basic Multilingual Plane, as Python's json.dump writes
// it) becomes the character, and an object key longer than 1024 characters an explicit key.
YAML::Node parse_json(const std::string& json, const std::string& source);

// A whole file, parsed: parse_json(text of path, path).
YAML::Node read_json_file(const std::string& path);

// `object[key]` as T; a value of another type is an infllm::Error naming `source`, the key and
// what was `expected` (e.g. "a whole number").
template <class T>
T json_field(const YAML::Node& object, const std::string& source, const std::string& key,
             const char* expected) {
  try {
    return object[key].as<T>();
  } catch (const YAML::Exception&) {
    fail(source, ": field ", key, " must be ", expected, ", got '", YAML::Dump(object[key]), "'");
  }
}

// Whether `object` has `key` with a value other than null.
inline bool json_has(const YAML::Node& object, const std::string& key) {
  return object.IsMap() && object[key] && !object[key].IsNull();
}

// `text` as a JSON string literal, quotes included (", \ and control characters escaped).
std::string json_quote(std::string_view text);

// The UTF-8 bytes of code point `cp` (up to U+10FFFF), appended to `out`.
void append_utf8(uint32_t cp, std::string& out);

// The bytes of a file; an infllm::Error naming it when it cannot be read.
std::string read_text_file(const std::string& path);

}  // namespace infllm::data
