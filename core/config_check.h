// One validator per config rule, reported in the caller's words.
//
// A library writes each rule of its config once, naming fields as the struct does:
//   check.require(c.topk >= forced, {"topk", "window_size"}, "is too small", "raise ",
//   check.key("topk"));
// The caller decides how those names read. A direct call names the op ("select_blocks: topk: ...");
// the recipe maps every field to its key ("attention.topk: ...") and says which file set it, so
// the same rule serves the recipe loader, the layers and the CUDA entry points.
//
// Message format: "[op: ]<key of fields[0]>: <problem>[ <origin>]; <fix>".
#pragma once

#include <charconv>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"

namespace infllm {

// The shortest text that reads back as exactly `value`: 0.0003 rather than 3e-04, but 1e-08
// rather than 0.00000001. For config values in messages and in written recipes.
inline std::string shortest_double(double value) {
  char buffer[400];  // fixed notation of the largest double needs 309 digits
  const double size = std::fabs(value);
  const auto format = size == 0 || (size >= 1e-4 && size < 1e15) ? std::chars_format::fixed
                                                                 : std::chars_format::scientific;
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value, format);
  return std::string(buffer, result.ptr);
}

class ConfigCheck {
 public:
  // How a field is named in messages: "topk" -> "attention.topk".
  using KeyOf = std::function<std::string(std::string_view field)>;
  // Where the values of a rule came from, given the keys the rule involves (first one named):
  // "in recipes/finetune_long.yaml".
  using OriginOf = std::function<std::string(const std::vector<std::string>& keys)>;

  // A direct call: messages start with `op` and name fields as the struct does.
  explicit ConfigCheck(std::string op) : op_(std::move(op)) {}
  // A config read from somewhere else (a recipe): fields named by `key`, located by `origin`.
  ConfigCheck(KeyOf key, OriginOf origin) : key_(std::move(key)), origin_(std::move(origin)) {}

  std::string key(std::string_view field) const { return key_ ? key_(field) : std::string(field); }

  // Throws infllm::Error when `ok` is false. `fields` are the fields the rule relates, the one
  // the message names first; `fix` parts are streamed into the message.
  template <class... Fix>
  void require(bool ok, std::initializer_list<std::string_view> fields, std::string_view problem,
               const Fix&... fix) const {
    if (ok) return;
    std::ostringstream text;
    (text << ... << fix);
    report(fields, problem, text.str());
  }

 private:
  [[noreturn]] void report(std::initializer_list<std::string_view> fields, std::string_view problem,
                           const std::string& fix) const {
    std::vector<std::string> keys;
    for (std::string_view field : fields) keys.push_back(key(field));
    const std::string origin = origin_ ? origin_(keys) : "";
    fail(op_.empty() ? "" : op_ + ": ", keys.front(), ": ", problem,
         origin.empty() ? "" : " " + origin, "; ", fix);
  }

  std::string op_;
  KeyOf key_;
  OriginOf origin_;
};

}  // namespace infllm
