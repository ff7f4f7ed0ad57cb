#include "data/synthetic_tasks.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "core/error.h"
#include "core/rng.h"
#include "data/byte_tokenizer.h"
#include "data/token_file.h"

namespace infllm::data {
namespace {

// Distinct Philox streams (the key) for the task contents and for the training-mix choice, so
// neither repeats the other's numbers nor the parameter init's (which uses the seed itself).
constexpr uint64_t kTaskSalt = 0x5441534B5F545854ull;  // "TASK_TXT"
constexpr uint64_t kMixSalt = 0x5441534B5F4D4958ull;   // "TASK_MIX"
constexpr int64_t kDrawsPerTask = 1 << 16;             // counters reserved per sample

constexpr int kPasskeyDigits = 5;
constexpr int kValueDigits = 6;
constexpr int kKeyLetters = 5;

// The stream of 32-bit draws of one task: counter index * kDrawsPerTask + j.
class Draws {
 public:
  Draws(uint64_t seed, uint64_t index) : seed_(seed ^ kTaskSalt), base_(index * kDrawsPerTask) {}
  uint32_t next() {
    INFLLM_CHECK(used_ < kDrawsPerTask, "synthetic task: more than ", kDrawsPerTask,
                 " random draws for one sample");
    return philox4x32(base_ + uint64_t(used_++), seed_).v[0];
  }
  // Uniform in [0, n) (n < 2^32; the bias of a 64-bit product is below 2^-32).
  uint64_t below(uint64_t n) {
    uint64_t wide = (uint64_t(next()) << 32) | next();
    return uint64_t((static_cast<unsigned __int128>(wide) * n) >> 64);
  }

 private:
  uint64_t seed_, base_;
  int64_t used_ = 0;
};

std::string digits(Draws& draws, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(char('0' + draws.below(10)));
  return s;
}

std::string letters(Draws& draws, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(char('a' + draws.below(26)));
  return s;
}

// The fixed text around the filler: instruction, needles (the queried one first), question
// and answer.
struct TaskText {
  std::string instruction;
  std::vector<std::string> needles;
  std::string question;
  std::string answer;
};

TaskText passkey_text(const std::string& key) {
  return {
      "There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
      "I will quiz you about the pass key.\n\n",
      {"\nThe pass key is " + key + ". Remember it. " + key + " is the pass key.\n"},
      "\nWhat is the pass key? The pass key is ",
      key};
}

TaskText needle_text(const std::vector<std::string>& keys, const std::vector<std::string>& values,
                     size_t queried) {
  TaskText text;
  text.instruction =
      "Some special magic numbers are hidden inside the following text. Remember them. I will "
      "quiz you about one of them.\n\n";
  // The queried needle first; the others keep their drawn order.
  std::vector<size_t> order{queried};
  for (size_t i = 0; i < keys.size(); ++i)
    if (i != queried) order.push_back(i);
  for (size_t i : order)
    text.needles.push_back("\nOne of the special magic numbers for " + keys[i] +
                           " is: " + values[i] + ".\n");
  text.question = "\nWhat is the special magic number for " + keys[queried] +
                  "? The special magic number for " + keys[queried] + " is: ";
  text.answer = values[queried];
  return text;
}

// Placeholder contents of the right lengths, for min_task_length.
TaskText text_shape(TaskKind kind, int needles) {
  if (kind == TaskKind::passkey) return passkey_text(std::string(kPasskeyDigits, '0'));
  std::vector<std::string> keys(size_t(needles), std::string(kKeyLetters, 'a'));
  std::vector<std::string> values(size_t(needles), std::string(kValueDigits, '0'));
  return needle_text(keys, values, 0);
}

int64_t fixed_tokens(const TaskText& text) {
  int64_t n = 1 + int64_t(text.instruction.size() + text.question.size() + text.answer.size());
  for (const std::string& needle : text.needles) n += int64_t(needle.size());
  return n;
}

void append_text(std::vector<uint32_t>& out, std::string_view text) {
  for (unsigned char c : text) out.push_back(c);
}

}  // namespace

std::string_view to_string(TaskKind kind) {
  return kind == TaskKind::passkey ? "passkey" : "needle";
}

TaskKind parse_task_kind(std::string_view text, std::string_view where) {
  if (text == "passkey") return TaskKind::passkey;
  if (text == "needle") return TaskKind::needle;
  throw Error(std::string(where) + ": unknown task kind '" + std::string(text) +
              "' (use passkey or needle)");
}

FillerText FillerText::from_file(const TokenFile& file) {
  INFLLM_CHECK(file.attributes().tokenizer == ByteTokenizer::kName, "synthetic tasks: filler file ",
               file.path(), " uses tokenizer '", file.attributes().tokenizer,
               "'; the tasks are written in the byte tokenizer (prepare the text with "
               "`infllm prepare`)");
  const TokenFile* f = &file;
  return {file.num_tokens(),
          [f](int64_t begin, int64_t end, uint32_t* out) { f->read(begin, end, out); }};
}

FillerText FillerText::from_tokens(std::vector<uint32_t> tokens) {
  auto shared = std::make_shared<const std::vector<uint32_t>>(std::move(tokens));
  return {int64_t(shared->size()), [shared](int64_t begin, int64_t end, uint32_t* out) {
            std::copy(shared->begin() + begin, shared->begin() + end, out);
          }};
}

int64_t min_task_length(TaskKind kind, int needles) {
  return fixed_tokens(text_shape(kind, needles)) + 1;
}

TaskSequence make_task(const TaskSpec& spec, const FillerText& filler) {
  INFLLM_CHECK(spec.depth >= 0 && spec.depth <= 1, "synthetic task: depth ", spec.depth,
               " is outside [0, 1]");
  INFLLM_CHECK(spec.kind == TaskKind::passkey || spec.needles >= 1,
               "synthetic task: a needle task needs at least 1 needle, got ", spec.needles);
  const int64_t min_length = min_task_length(spec.kind, spec.needles);
  INFLLM_CHECK(spec.length >= min_length, "synthetic task: ", to_string(spec.kind),
               " needs at least ", min_length, " tokens, asked for ", spec.length,
               " (use a longer sequence or fewer needles)");

  Draws draws(spec.seed, spec.index);
  TaskText text;
  if (spec.kind == TaskKind::passkey) {
    text = passkey_text(digits(draws, kPasskeyDigits));
  } else {
    std::vector<std::string> keys, values;
    while (keys.size() < size_t(spec.needles)) {  // distinct keys, so the query is unambiguous
      std::string key = letters(draws, kKeyLetters);
      if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
    }
    for (int i = 0; i < spec.needles; ++i) values.push_back(digits(draws, kValueDigits));
    text = needle_text(keys, values, size_t(draws.below(uint64_t(spec.needles))));
  }

  // Filler: one contiguous window of real text; document markers become blank lines.
  const int64_t F = spec.length - fixed_tokens(text);
  INFLLM_CHECK(filler.size >= F, "synthetic task: the filler text holds ", filler.size,
               " tokens, fewer than the ", F, " a ", spec.length,
               "-token task needs (use a larger filler file or shorter tasks)");
  std::vector<uint32_t> window(static_cast<size_t>(F));
  const int64_t start = int64_t(draws.below(uint64_t(filler.size - F + 1)));
  filler.read(start, start + F, window.data());
  for (uint32_t& t : window)
    if (t >= 256) t = '\n';

  // Needle offsets in the filler: the queried one (needles[0]) at the depth, the others drawn.
  std::vector<std::pair<int64_t, size_t>> at;  // (filler offset, needle) sorted
  at.emplace_back(std::llround(spec.depth * double(F)), 0);
  for (size_t i = 1; i < text.needles.size(); ++i)
    at.emplace_back(int64_t(draws.below(uint64_t(F + 1))), i);
  std::stable_sort(at.begin(), at.end());

  TaskSequence seq;
  seq.tokens.reserve(size_t(spec.length));
  seq.tokens.push_back(ByteTokenizer::kBos);
  append_text(seq.tokens, text.instruction);
  int64_t used = 0;
  for (const auto& [offset, i] : at) {
    seq.tokens.insert(seq.tokens.end(), window.begin() + used, window.begin() + offset);
    used = offset;
    if (i == 0) seq.needle_begin = int64_t(seq.tokens.size());
    append_text(seq.tokens, text.needles[i]);
    if (i == 0) seq.needle_end = int64_t(seq.tokens.size());
  }
  seq.tokens.insert(seq.tokens.end(), window.begin() + used, window.end());
  append_text(seq.tokens, text.question);
  seq.answer_begin = int64_t(seq.tokens.size());
  append_text(seq.tokens, text.answer);
  seq.answer_length = int64_t(text.answer.size());
  seq.answer = text.answer;
  INFLLM_CHECK(int64_t(seq.tokens.size()) == spec.length, "synthetic task: built ",
               seq.tokens.size(), " tokens instead of ", spec.length, " (a bug)");
  return seq;
}

bool draw_training_task(uint64_t seed, uint64_t index, double rate,
                        const std::vector<TaskKind>& kinds, int64_t length, TaskSpec& spec) {
  if (rate <= 0 || kinds.empty()) return false;
  const Philox4 r = philox4x32(index, seed ^ kMixSalt);
  if (double(r.v[0] >> 8) * (1.0 / 16777216.0) >= rate) return false;
  spec.kind = kinds[r.v[1] % kinds.size()];
  spec.depth = double(r.v[2] >> 8) * (1.0 / 16777215.0);  // [0, 1], both ends reachable
  spec.length = length;
  spec.seed = seed;
  spec.index = index;
  return true;
}

}  // namespace infllm::data
