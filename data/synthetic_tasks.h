// Synthetic long-context tasks in the byte tokenizer, generated from (seed, index) alone:
//
//   passkey  a 5-digit number hidden at a given depth of filler text, asked for at the end
//            (Mohtashami & Jaggi's passkey retrieval);
//   needle   several key-value needles ("the special magic number for <key> is <value>") spread
//            through the filler, one of them queried at the end (RULER's multi-key needle).
//
// A task sequence holds exactly `length` tokens:
//   [BOS] instruction filler ... needle(s) ... filler question answer
// and the answer is its last answer_length tokens, so next-token loss on the whole sequence
// trains retrieval, and the answer's tokens are predicted from positions
// [answer_begin - 1, length - 1). The filler is real text: windows of a token file at
// pseudo-random offsets (document markers turned into blank lines), never one repeated sentence.
// The queried needle starts at instruction_end + round(depth * filler_tokens) plus the lengths
// of the needles placed before it; `needle_begin` records where it landed.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace infllm::data {

class TokenFile;

enum class TaskKind { passkey, needle };

// "passkey" / "needle"; parse_task_kind names `where` (a recipe key or flag) in its error.
std::string_view to_string(TaskKind kind);
TaskKind parse_task_kind(std::string_view text, std::string_view where);

// Real text to hide needles in: `size` tokens, of which read(begin, end, out) copies any range.
struct FillerText {
  int64_t size = 0;
  std::function<void(int64_t begin, int64_t end, uint32_t* out)> read;

  // All tokens of a token file (read on demand; TokenFile reads are thread-safe). The file
  // must outlive the FillerText.
  static FillerText from_file(const TokenFile& file);
  // Tokens held in memory (tests, small texts).
  static FillerText from_tokens(std::vector<uint32_t> tokens);
};

struct TaskSpec {
  TaskKind kind = TaskKind::passkey;
  int64_t length = 0;  // tokens in the whole sequence
  double depth = 0.5;  // where the (queried) needle starts in the filler: 0 = first, 1 = last
  int needles = 4;     // needle tasks: key-value pairs hidden, one of them queried
  uint64_t seed = 0;
  uint64_t index = 0;  // the sample's number: (seed, index) fixes every random choice
};

struct TaskSequence {
  std::vector<uint32_t> tokens;  // exactly spec.length tokens, tokens[0] = BOS
  int64_t answer_begin = 0;      // the answer is tokens[answer_begin, length)
  int64_t answer_length = 0;
  int64_t needle_begin = 0;  // first token of the queried needle's sentence
  int64_t needle_end = 0;
  std::string answer;  // the answer's text (digits)
};

// The shortest length make_task accepts for a kind (instruction, needles, question, answer and
// at least one filler token).
int64_t min_task_length(TaskKind kind, int needles);

// Deterministic: equal (spec, filler contents) give equal sequences. Throws infllm::Error when
// spec.length < min_task_length, the depth is outside [0, 1] or the filler is shorter than
// the sequence.
TaskSequence make_task(const TaskSpec& spec, const FillerText& filler);

// The task of one training sample: whether sample `index` of a run is a task sequence (with
// probability `rate`), and which (kind uniform over `kinds`, depth uniform in [0, 1]). Returns
// false for an ordinary corpus window. Pure in (seed, index).
bool draw_training_task(uint64_t seed, uint64_t index, double rate,
                        const std::vector<TaskKind>& kinds, int64_t length, TaskSpec& spec);

}  // namespace infllm::data
