#include "train/metrics_log.h"

#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace infllm::train {

namespace fs = std::filesystem;

MetricsLine& MetricsLine::set(std::string_view key, MetricValue value) {
  for (MetricField& field : fields) {
    if (field.key == key) {
      field.value = std::move(value);
      return *this;
    }
  }
  fields.push_back({std::string(key), std::move(value)});
  return *this;
}

const MetricValue* MetricsLine::find(std::string_view key) const {
  for (const MetricField& field : fields) {
    if (field.key == key) return &field.value;
  }
  return nullptr;
}

// to_chars without a precision argument writes the shortest text that reads back to the same
// value, in whichever of fixed or exponent form is shorter; both are valid JSON numbers.
template <class Number>
static std::string shortest_text(Number value) {
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::string json_number(double value) {
  return std::isfinite(value) ? shortest_text(value) : "null";
}

std::string json_number(float value) {
  return std::isfinite(value) ? shortest_text(value) : "null";
}

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

static std::string json_value(const MetricValue& value) {
  struct Visitor {
    std::string operator()(double v) const { return json_number(v); }
    std::string operator()(float v) const { return json_number(v); }
    std::string operator()(int64_t v) const { return shortest_text(v); }
    std::string operator()(const std::string& v) const { return json_string(v); }
  };
  return std::visit(Visitor{}, value);
}

std::string to_json_line(const MetricsLine& line) {
  std::string out = "{\"step\":" + shortest_text(line.step);
  for (const MetricField& field : line.fields) {
    out += "," + json_string(field.key) + ":" + json_value(field.value);
  }
  return out + "}";
}

namespace {

// A reader for the flat objects that to_json_line writes. Every parse_* returns false on text
// it does not understand; the caller then gives up on the whole line.
class FlatJsonReader {
 public:
  explicit FlatJsonReader(std::string_view text) : text_(text) {}

  bool parse_object(MetricsLine& line) {
    bool has_step = false;
    if (!consume('{')) return false;
    if (consume('}')) return false;  // no step
    do {
      std::string key;
      MetricValue value;
      if (!parse_string(key) || !consume(':') || !parse_value(value)) return false;
      if (key == "step") {
        if (!std::holds_alternative<int64_t>(value) || has_step) return false;
        line.step = std::get<int64_t>(value);
        has_step = true;
      } else {
        line.set(key, std::move(value));
      }
    } while (consume(','));
    if (!consume('}')) return false;
    skip_space();
    return has_step && pos_ == text_.size();
  }

 private:
  void skip_space() {
    while (pos_ < text_.size() && std::strchr(" \t\r\n", text_[pos_]) != nullptr) ++pos_;
  }

  bool consume(char expected) {
    skip_space();
    if (pos_ >= text_.size() || text_[pos_] != expected) return false;
    ++pos_;
    return true;
  }

  bool consume_word(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  bool parse_value(MetricValue& value) {
    skip_space();
    if (pos_ >= text_.size()) return false;
    char c = text_[pos_];
    if (c == '"') {
      std::string text;
      if (!parse_string(text)) return false;
      value = std::move(text);
      return true;
    }
    if (consume_word("null")) return value = std::nan(""), true;
    if (consume_word("true")) return value = int64_t{1}, true;
    if (consume_word("false")) return value = int64_t{0}, true;
    return parse_number(value);
  }

  bool parse_number(MetricValue& value) {
    size_t end = pos_;
    bool integral = true;
    while (end < text_.size() && std::strchr("+-0123456789.eE", text_[end]) != nullptr) {
      if (std::strchr(".eE", text_[end]) != nullptr) integral = false;
      ++end;
    }
    const char* first = text_.data() + pos_;
    const char* last = text_.data() + end;
    if (first == last) return false;
    if (integral) {
      int64_t number = 0;
      auto result = std::from_chars(first, last, number);
      if (result.ec != std::errc() || result.ptr != last) return false;
      value = number;
    } else {
      double number = 0;
      auto result = std::from_chars(first, last, number);
      if (result.ec != std::errc() || result.ptr != last) return false;
      value = number;
    }
    pos_ = end;
    return true;
  }

  bool parse_string(std::string& out) {
    if (!consume('"')) return false;
    while (pos_ < text_.size()) {
      char c = text_[pos_++];
      if (c == '"') return true;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= text_.size()) return false;
      char escape = text_[pos_++];
      switch (escape) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u':
          if (!parse_unicode_escape(out)) return false;
          break;
        default:
          return false;
      }
    }
    return false;  // no closing quote
  }

  // \uXXXX (already past the "\u"), written out as UTF-8. Surrogate pairs are not combined:
  // keys and values in metrics files are ASCII names.
  bool parse_unicode_escape(std::string& out) {
    unsigned code = 0;
    if (pos_ + 4 > text_.size()) return false;
    auto result = std::from_chars(text_.data() + pos_, text_.data() + pos_ + 4, code, 16);
    if (result.ptr != text_.data() + pos_ + 4) return false;
    pos_ += 4;
    if (code < 0x80) {
      out += char(code);
    } else if (code < 0x800) {
      out += char(0xC0 | (code >> 6));
      out += char(0x80 | (code & 0x3F));
    } else {
      out += char(0xE0 | (code >> 12));
      out += char(0x80 | ((code >> 6) & 0x3F));
      out += char(0x80 | (code & 0x3F));
    }
    return true;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

std::optional<MetricsLine> parse_json_line(std::string_view text) {
  MetricsLine line;
  if (!FlatJsonReader(text).parse_object(line)) return std::nullopt;
  return line;
}

MetricsLog::MetricsLog(const std::string& run_dir)
    : path_((fs::path(run_dir) / "metrics.jsonl").string()) {
  std::error_code error;
  fs::create_directories(run_dir, error);
  file_ = std::fopen(path_.c_str(), "a");
  INFLLM_CHECK(file_ != nullptr, "metrics log: cannot open ", path_,
               " for appending: ", std::strerror(errno), " (is train.out_dir writable?)");
}

MetricsLog::~MetricsLog() {
  std::fclose(file_);
}

void MetricsLog::write(const MetricsLine& line) {
  std::string text = to_json_line(line) + "\n";
  bool ok = std::fwrite(text.data(), 1, text.size(), file_) == text.size();
  ok = std::fflush(file_) == 0 && ok;
  INFLLM_CHECK(ok, "metrics log: cannot write to ", path_, ": ", std::strerror(errno),
               " (disk full?)");
}

int64_t drop_metrics_after(const std::string& metrics_path, int64_t last_step) {
  std::ifstream in(metrics_path, std::ios::binary);
  if (!in) return 0;
  std::stringstream content;
  content << in.rdbuf();
  std::string text = content.str();

  std::string kept;
  int64_t dropped = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t newline = text.find('\n', start);
    if (newline == std::string::npos) {  // unterminated: the write of this line never finished
      ++dropped;
      break;
    }
    std::string_view line(text.data() + start, newline - start);
    std::optional<MetricsLine> parsed = parse_json_line(line);
    if (parsed && parsed->step > last_step) {
      ++dropped;
    } else {
      kept.append(line).append("\n");
    }
    start = newline + 1;
  }
  if (dropped == 0) return 0;

  std::string temp_path = metrics_path + ".tmp";
  std::FILE* out = std::fopen(temp_path.c_str(), "w");
  INFLLM_CHECK(out != nullptr, "metrics log: cannot create ", temp_path, ": ",
               std::strerror(errno));
  bool ok = std::fwrite(kept.data(), 1, kept.size(), out) == kept.size();
  ok = std::fflush(out) == 0 && ok;
  ok = ::fsync(fileno(out)) == 0 && ok;
  ok = std::fclose(out) == 0 && ok;
  INFLLM_CHECK(ok, "metrics log: cannot write ", temp_path, ": ", std::strerror(errno),
               " (disk full?)");
  std::error_code error;
  fs::rename(temp_path, metrics_path, error);
  INFLLM_CHECK(!error, "metrics log: cannot replace ", metrics_path, " with ", temp_path, ": ",
               error.message());
  return dropped;
}

}  // namespace infllm::train
