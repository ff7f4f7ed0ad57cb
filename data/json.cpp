#include "data/json.h"

#include <cstdio>

#include <cctype>
#include <fstream>
#include <sstream>

namespace infllm::data {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The code unit of a \uXXXX escape starting at text[i] (the backslash), or -1.
int escaped_unit(const std::string& text, size_t i) {
  if (i + 6 > text.size() || text[i] != '\\' || text[i + 1] != 'u') return -1;
  int unit = 0;
  for (size_t k = i + 2; k < i + 6; ++k) {
    const int digit = hex_value(text[k]);
    if (digit < 0) return -1;
    unit = unit * 16 + digit;
  }
  return unit;
}

// `json` made readable by yaml-cpp, meaning unchanged: every escaped surrogate pair inside a
// string replaced by the raw UTF-8 of its character (other escapes are copied untouched; an
// escaped backslash is skipped as a whole, so "\\uD83D" stays a backslash and text), and every
// long object key made an explicit YAML key ("? "): yaml-cpp refuses implicit keys over 1024
// characters, which a tokenizer's vocabulary may hold.
std::string yaml_ready(const std::string& json) {
  constexpr size_t kLongKey = 256;
  std::string out;
  out.reserve(json.size());
  size_t string_begin = 0, out_begin = 0;  // the open string's quote, in json and in out
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (!in_string) {
      if (c == '"') {
        in_string = true;
        string_begin = i;
        out_begin = out.size();
      }
      out += c;
      continue;
    }
    if (c == '"') {
      in_string = false;
      out += c;
      if (i - string_begin > kLongKey) {
        size_t next = i + 1;
        while (next < json.size() && std::isspace(static_cast<unsigned char>(json[next]))) ++next;
        if (next < json.size() && json[next] == ':') out.insert(out_begin, "? ");
      }
      continue;
    }
    if (c != '\\' || i + 1 >= json.size()) {
      out += c;
      continue;
    }
    const int high = escaped_unit(json, i), low = escaped_unit(json, i + 6);
    if (high >= 0xD800 && high <= 0xDBFF && low >= 0xDC00 && low <= 0xDFFF) {
      append_utf8(0x10000 + ((uint32_t(high) - 0xD800) << 10) + (uint32_t(low) - 0xDC00), out);
      i += 11;
      continue;
    }
    out += c;
    out += json[++i];  // the escaped character: never a string's end
  }
  return out;
}

}  // namespace

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

std::string json_quote(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escape[8];
      std::snprintf(escape, sizeof escape, "\\u%04x", unsigned(c));
      out += escape;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

YAML::Node parse_json(const std::string& json, const std::string& source) {
  try {
    YAML::Node root = YAML::Load(yaml_ready(json));
    INFLLM_CHECK(root.IsMap(), source, ": not a JSON object");
    return root;
  } catch (const YAML::Exception& e) {
    fail(source, ": not valid JSON: ", e.what());
  }
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  INFLLM_CHECK(in.good(), path, ": cannot open it");
  std::stringstream text;
  text << in.rdbuf();
  INFLLM_CHECK(!in.bad(), path, ": reading it failed (I/O error)");
  return text.str();
}

YAML::Node read_json_file(const std::string& path) {
  return parse_json(read_text_file(path), path);
}

}  // namespace infllm::data
