#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "data/byte_tokenizer.h"
#include "data/synthetic_tasks.h"

namespace infllm::data {
namespace {

const std::string kPasskeyQuestion = "\nWhat is the pass key? The pass key is ";

// Filler whose every window is recognizable: token i is a letter that depends on i, with
// document markers (which the generator turns into newlines) every 97 tokens.
FillerText numbered_filler(int64_t n) {
  std::vector<uint32_t> tokens(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    tokens[size_t(i)] = i % 97 == 0 ? ByteTokenizer::kEos : uint32_t('a' + (i * 7 + i / 26) % 26);
  return FillerText::from_tokens(tokens);
}

std::string text_of(const std::vector<uint32_t>& tokens, int64_t begin, int64_t end) {
  std::string s;
  for (int64_t i = begin; i < end; ++i) s.push_back(char(tokens[size_t(i)]));
  return s;
}

TEST(SyntheticTasks, PasskeyAnswerAtTheEndAndNeedleAtTheDepth) {
  const FillerText filler = numbered_filler(20000);
  const int64_t length = 4096;
  TaskSpec spec{TaskKind::passkey, length, 0.0, 4, 7, 3};
  const TaskSequence top = make_task(spec, filler);
  const int64_t instruction_end = top.needle_begin;  // depth 0: right after the instruction
  for (double depth : {0.0, 0.1, 0.25, 0.5, 0.77, 1.0}) {
    spec.depth = depth;
    const TaskSequence seq = make_task(spec, filler);
    ASSERT_EQ(int64_t(seq.tokens.size()), length);
    EXPECT_EQ(seq.tokens[0], ByteTokenizer::kBos);
    // The answer: the last 5 tokens, digits, the same number as in the needle.
    ASSERT_EQ(seq.answer_length, 5);
    EXPECT_EQ(seq.answer_begin, length - 5);
    EXPECT_EQ(text_of(seq.tokens, seq.answer_begin, length), seq.answer);
    for (char c : seq.answer) EXPECT_TRUE(c >= '0' && c <= '9') << seq.answer;
    EXPECT_EQ(
        text_of(seq.tokens, seq.answer_begin - int64_t(kPasskeyQuestion.size()), seq.answer_begin),
        kPasskeyQuestion);
    EXPECT_EQ(
        text_of(seq.tokens, seq.needle_begin, seq.needle_end),
        "\nThe pass key is " + seq.answer + ". Remember it. " + seq.answer + " is the pass key.\n");
    // Exact placement: round(depth * filler tokens) filler tokens before the needle.
    const int64_t filler_tokens = length - (seq.needle_end - seq.needle_begin) - instruction_end -
                                  int64_t(kPasskeyQuestion.size()) - seq.answer_length;
    EXPECT_EQ(seq.needle_begin - instruction_end, std::llround(depth * double(filler_tokens)))
        << "depth " << depth;
    // Every other token is filler text: letters and newlines, never a specials.
    for (int64_t i = instruction_end; i < seq.answer_begin - int64_t(kPasskeyQuestion.size());
         ++i) {
      if (i >= seq.needle_begin && i < seq.needle_end) continue;
      const uint32_t t = seq.tokens[size_t(i)];
      ASSERT_TRUE(t == '\n' || (t >= 'a' && t <= 'z')) << "token " << i << " = " << t;
    }
  }
}

TEST(SyntheticTasks, FillerIsOneContiguousWindowOfTheText) {
  const int64_t n = 50000;
  const FillerText filler = numbered_filler(n);
  std::vector<uint32_t> all(static_cast<size_t>(n));
  filler.read(0, n, all.data());
  for (uint32_t& t : all)
    if (t >= 256) t = '\n';
  const TaskSequence seq = make_task({TaskKind::passkey, 3000, 0.0, 4, 11, 5}, filler);
  // At depth 0 the filler follows the needle up to the question.
  const int64_t begin = seq.needle_end, end = seq.answer_begin - int64_t(kPasskeyQuestion.size());
  const std::vector<uint32_t> window(seq.tokens.begin() + begin, seq.tokens.begin() + end);
  auto found = std::search(all.begin(), all.end(), window.begin(), window.end());
  EXPECT_NE(found, all.end()) << "the filler is not a window of the text";
}

TEST(SyntheticTasks, DeterministicInSeedAndIndex) {
  const FillerText filler = numbered_filler(100000);
  for (TaskKind kind : {TaskKind::passkey, TaskKind::needle}) {
    TaskSpec spec{kind, 8192, 0.4, 4, 42, 9};
    const TaskSequence a = make_task(spec, filler), b = make_task(spec, filler);
    EXPECT_EQ(a.tokens, b.tokens);
    EXPECT_EQ(a.answer, b.answer);
    int differ = 0;
    for (uint64_t index = 10; index < 20; ++index) {
      spec.index = index;
      differ += make_task(spec, filler).tokens != a.tokens;
    }
    EXPECT_EQ(differ, 10);
    spec.index = 9;
    spec.seed = 43;
    EXPECT_NE(make_task(spec, filler).tokens, a.tokens);
  }
}

TEST(SyntheticTasks, NeedleQueriesOneOfSeveralDistinctKeys) {
  const FillerText filler = numbered_filler(100000);
  for (uint64_t index = 0; index < 20; ++index) {
    TaskSpec spec{TaskKind::needle, 6000, 0.3, 5, 1, index};
    const TaskSequence seq = make_task(spec, filler);
    ASSERT_EQ(int64_t(seq.tokens.size()), spec.length);
    const std::string all = text_of(seq.tokens, 1, spec.length);
    ASSERT_EQ(seq.answer_length, 6);
    EXPECT_EQ(text_of(seq.tokens, seq.answer_begin, spec.length), seq.answer);
    // The question names the key of the needle at needle_begin, whose value is the answer.
    const std::string needle = text_of(seq.tokens, seq.needle_begin, seq.needle_end);
    const std::string prefix = "\nOne of the special magic numbers for ";
    ASSERT_EQ(needle.rfind(prefix, 0), 0u) << needle;
    const std::string key = needle.substr(prefix.size(), 5);
    EXPECT_EQ(needle, prefix + key + " is: " + seq.answer + ".\n");
    EXPECT_NE(all.find("\nWhat is the special magic number for " + key +
                       "? The special magic "
                       "number for " +
                       key + " is: " + seq.answer),
              std::string::npos);
    // Five needles with five different keys.
    std::vector<std::string> keys;
    for (size_t at = all.find(prefix); at != std::string::npos; at = all.find(prefix, at + 1))
      keys.push_back(all.substr(at + prefix.size(), 5));
    ASSERT_EQ(keys.size(), 5u);
    std::sort(keys.begin(), keys.end());
    EXPECT_EQ(std::unique(keys.begin(), keys.end()), keys.end());
  }
}

TEST(SyntheticTasks, RefusesImpossibleRequests) {
  const FillerText filler = numbered_filler(1000);
  const int64_t shortest = min_task_length(TaskKind::passkey, 1);
  EXPECT_NO_THROW(make_task({TaskKind::passkey, shortest, 0.5, 1, 0, 0}, filler));
  EXPECT_THROW(make_task({TaskKind::passkey, shortest - 1, 0.5, 1, 0, 0}, filler), Error);
  EXPECT_THROW(make_task({TaskKind::passkey, 900, 1.5, 1, 0, 0}, filler), Error);
  EXPECT_THROW(make_task({TaskKind::needle, 900, 0.5, 0, 0, 0}, filler), Error);
  EXPECT_THROW(make_task({TaskKind::passkey, 5000, 0.5, 1, 0, 0}, filler), Error);  // filler
  EXPECT_THROW(parse_task_kind("haystack", "data.task_kinds"), Error);
  EXPECT_EQ(parse_task_kind("needle", "x"), TaskKind::needle);
}

TEST(SyntheticTasks, TrainingMixFollowsTheRate) {
  const std::vector<TaskKind> both{TaskKind::passkey, TaskKind::needle};
  TaskSpec spec;
  int tasks = 0, needles = 0;
  double depth_sum = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    EXPECT_FALSE(draw_training_task(5, uint64_t(i), 0.0, both, 4096, spec));
    EXPECT_TRUE(draw_training_task(5, uint64_t(i), 1.0, both, 4096, spec));
    if (draw_training_task(5, uint64_t(i), 0.25, both, 4096, spec)) {
      ++tasks;
      needles += spec.kind == TaskKind::needle;
      depth_sum += spec.depth;
      EXPECT_EQ(spec.index, uint64_t(i));
      EXPECT_EQ(spec.length, 4096);
      TaskSpec again;
      ASSERT_TRUE(draw_training_task(5, uint64_t(i), 0.25, both, 4096, again));
      EXPECT_EQ(again.kind, spec.kind);
      EXPECT_EQ(again.depth, spec.depth);
    }
  }
  // Binomial(20000, 0.25): sd 61; kinds and depths uniform.
  EXPECT_NEAR(tasks, 0.25 * n, 300);
  EXPECT_NEAR(double(needles) / tasks, 0.5, 0.04);
  EXPECT_NEAR(depth_sum / tasks, 0.5, 0.02);
}

}  // namespace
}  // namespace infllm::data
