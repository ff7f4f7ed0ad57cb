// What happens when things go wrong, end to end through the real `infllm` executable: two
// writers in one folder, a fresh run into an old folder, a rejected --resume, bad data files,
// absurd sizes, bad command-line numbers, a full disk under `prepare`, and kill -9 at random
// moments of a run that checkpoints every step.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "data/token_file.h"
#include "tests/data/test_util.h"
#include "tests/train/infllm_cli.h"
#include "train/checkpoint.h"

namespace infllm::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace testing;

const std::string kTiny = "tests/train/recipes/tiny.yaml";

std::string train_args(const std::string& dir, const std::string& extra = "") {
  return "train " + kTiny + " train.out_dir=" + dir + " " + extra;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Every tensor of the newest checkpoint of a run, by name.
std::map<std::string, std::vector<float>> final_weights(const std::string& dir) {
  CheckpointState state = load_checkpoint(*latest_checkpoint(dir + "/checkpoints"));
  std::map<std::string, std::vector<float>> weights;
  for (auto& [name, tensor] : state.tensors) weights[name] = tensor.to_vector<float>();
  return weights;
}

void wait_for_a_logged_step(const std::string& dir) {
  for (int i = 0; i < 1200 && logged(dir, "loss").empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_FALSE(logged(dir, "loss").empty()) << "the run never logged a step";
}

TEST(RunGuard, ASecondWriterFailsAtOnceWithTheHoldersPid) {
  const std::string dir = fresh_dir("guard-second");
  pid_t first = start({"train", kTiny, "train.out_dir=" + dir, "train.steps=100000",
                       "checkpoint.every=0", "train.eval_every=0"});
  wait_for_a_logged_step(dir);
  auto begin = Clock::now();
  Outcome second = run(train_args(dir, "--resume"));
  EXPECT_LT(Clock::now() - begin, std::chrono::seconds(10)) << "it must not wait for the lock";
  EXPECT_EQ(second.exit_code, 1) << second.output;
  EXPECT_TRUE(contains(second.output, "in use by another infllm run")) << second.output;
  EXPECT_TRUE(contains(second.output, "pid " + std::to_string(first))) << second.output;
  EXPECT_TRUE(contains(second.output, dir)) << second.output;
  kill(first, SIGTERM);
  int status = 0;
  waitpid(first, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the first run stops cleanly";
  // A lock left by a process killed with SIGKILL does not block the next run.
  pid_t killed = start({"train", kTiny, "train.out_dir=" + dir, "train.steps=100000",
                        "checkpoint.every=0", "train.eval_every=0", "--resume"});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(killed, SIGKILL);
  waitpid(killed, nullptr, 0);
  Outcome after = run(train_args(dir, "train.steps=2 --overwrite"));
  EXPECT_EQ(after.exit_code, 0) << after.output;
}

TEST(RunGuard, AFreshRunIntoAnOldFolderIsRefusedAndOverwriteKeepsTheOldRun) {
  const std::string dir = fresh_dir("guard-fresh");
  ASSERT_EQ(run(train_args(dir)).exit_code, 0);
  const auto before = snapshot(dir);
  ASSERT_TRUE(before.count("checkpoints/step_00000008.h5"));
  Outcome again = run(train_args(dir));
  EXPECT_EQ(again.exit_code, 1) << again.output;
  for (const char* part : {"already holds a run", "--resume", "--overwrite", "step_00000008.h5"})
    EXPECT_TRUE(contains(again.output, part)) << part << ": " << again.output;
  EXPECT_EQ(snapshot(dir), before) << "a refused run changes nothing";
  Outcome both = run(train_args(dir, "--resume --overwrite"));
  EXPECT_EQ(both.exit_code, 1) << both.output;

  Outcome overwrite = run(train_args(dir, "train.steps=4 --overwrite"));
  ASSERT_EQ(overwrite.exit_code, 0) << overwrite.output;
  std::string previous;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().rfind("previous-", 0) == 0) previous = entry.path();
  ASSERT_FALSE(previous.empty()) << overwrite.output;
  EXPECT_TRUE(contains(overwrite.output, previous)) << overwrite.output;
  EXPECT_EQ(snapshot(previous), before) << "the old run, byte for byte";
  EXPECT_EQ(logged(dir, "loss").size(), 4u);
  EXPECT_EQ(list_checkpoints(dir + "/checkpoints").size(), 1u);
}

TEST(RunGuard, ARejectedResumeLeavesTheFolderByteIdentical) {
  const std::string dir = fresh_dir("guard-rejected");
  ASSERT_EQ(run(train_args(dir)).exit_code, 0);
  const auto before = snapshot(dir);
  // A checkpoint of another model shape: loading it fails after the model was built.
  Outcome shape = run(train_args(dir, "model.d_model=64 train.steps=12 --resume"));
  EXPECT_EQ(shape.exit_code, 1) << shape.output;
  EXPECT_EQ(snapshot(dir), before) << shape.output;
  // A bad validation file fails in the checks before the model exists.
  const std::string bad = dir + "-bad.val.h5";
  fs::copy_file("data/corpus/english.val.h5", bad, fs::copy_options::overwrite_existing);
  fs::resize_file(bad, fs::file_size(bad) / 2);
  Outcome data = run(train_args(dir, "train.steps=12 data.val=" + bad + " --resume"));
  EXPECT_EQ(data.exit_code, 1) << data.output;
  EXPECT_TRUE(contains(data.output, "data.val")) << data.output;
  EXPECT_EQ(snapshot(dir), before) << data.output;
  fs::remove(bad);
}

TEST(RunGuard, BadDataFilesFailBeforeTheFirstStep) {
  const std::string dir = fresh_dir("guard-data");
  fs::create_directories(dir + "-files");
  // A token beyond the vocabulary, deep in the file (the first read window would not see it).
  std::mt19937_64 rng(7);
  data::testing::RawTokenFile out_of_range = data::testing::random_raw_file(rng, 400, 258);
  out_of_range.tokens[out_of_range.tokens.size() - 3] = 300;
  const std::string range_file = dir + "-files/range.h5";
  data::testing::write_raw_token_file(range_file, out_of_range);
  // A file of a larger vocabulary than the model's.
  const std::string vocab_file = dir + "-files/vocab.h5";
  {
    data::TokenFileWriter writer(vocab_file, {512, "other", "test"});
    std::vector<uint32_t> tokens(5000);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint32_t(i % 512);
    writer.append_document(tokens);
    writer.close();
  }
  // Shorter than one validation window.
  const std::string short_file = dir + "-files/short.h5";
  {
    data::TokenFileWriter writer(short_file, {258, "byte", "test"});
    writer.append_document(std::vector<uint32_t>(40, 65));
    writer.close();
  }
  struct Case {
    std::string key, file;
    std::vector<std::string> parts;
  };
  for (const Case& c : {Case{"data.val", range_file, {"data.val", "300", "vocabulary"}},
                        Case{"data.train", range_file, {"data.train", "300", "vocabulary"}},
                        Case{"data.val", vocab_file, {"data.val", "512", "model.vocab_size"}},
                        Case{"data.val", short_file, {"data.val", "40 tokens", "data.seq_len"}}}) {
    Outcome out = run(train_args(dir, c.key + "=" + c.file));
    EXPECT_EQ(out.exit_code, 1) << out.output;
    for (const std::string& part : c.parts) EXPECT_TRUE(contains(out.output, part)) << out.output;
    EXPECT_FALSE(contains(out.output, "HDF5-DIAG")) << out.output;
    EXPECT_FALSE(fs::exists(dir)) << c.key << "=" << c.file << ": nothing written";
  }
  fs::remove_all(dir + "-files");
}

TEST(RunGuard, AbsurdSizesFailInWellUnderASecond) {
  const std::string dir = fresh_dir("guard-memory");
  for (const char* key : {"model.n_layers", "data.prefetch"}) {
    auto begin = Clock::now();
    Outcome out = run(train_args(dir, std::string(key) + "=2000000000"));
    const double seconds = std::chrono::duration<double>(Clock::now() - begin).count();
    EXPECT_EQ(out.exit_code, 1) << out.output;
    EXPECT_LT(seconds, 2.0) << key << ": the whole process, start to exit";
    EXPECT_TRUE(contains(out.output, "memory")) << out.output;
    EXPECT_TRUE(contains(out.output, key)) << out.output;
    EXPECT_FALSE(contains(out.output, "bad_alloc")) << out.output;
    EXPECT_FALSE(fs::exists(dir));
  }
}

TEST(RunGuard, CommandLineNumbersAreRangeChecked) {
  struct Case {
    std::string args, option;
  };
  const std::string ckpt = "/nonexistent/ckpt.h5";
  for (const Case& c : {
           Case{"generate " + ckpt + " --tokens -5", "--tokens"},
           Case{"generate " + ckpt + " --tokens 0", "--tokens"},
           Case{"generate " + ckpt + " --tokens 5x", "--tokens"},
           Case{"generate " + ckpt + " --temperature -1", "--temperature"},
           Case{"generate " + ckpt + " --temperature nan", "--temperature"},
           Case{"generate " + ckpt + " --temperature inf", "--temperature"},
           Case{"generate " + ckpt + " --seed -1", "--seed"},
           Case{"eval " + ckpt + " --seq-len 0", "--seq-len"},
           Case{"eval " + ckpt + " --lse-stride 0", "--lse-stride"},
           Case{"eval " + ckpt + " --windows -1", "--windows"},
           Case{"eval " + ckpt + " --batch 99999999999", "--batch"},
           Case{train_args("/tmp/infllm-tests/never", "--nproc -1"), "--nproc"},
           Case{train_args("/tmp/infllm-tests/never", "--nproc 0"), "--nproc"},
           Case{"bench " + kTiny + " --steps 0", "--steps"},
           Case{"prepare -o /tmp/infllm-tests/never.h5 README.md --val-docs -1", "--val-docs"},
           Case{"prepare -o /tmp/infllm-tests/never.h5 README.md --min-doc-bytes -3",
                "--min-doc-bytes"},
           Case{"prepare -o /tmp/infllm-tests/never.h5 README.md --val-fraction 1",
                "--val-fraction"},
       }) {
    Outcome out = run(c.args);
    EXPECT_EQ(out.exit_code, 1) << c.args << "\n" << out.output;
    EXPECT_TRUE(contains(out.output, c.option)) << c.args << "\n" << out.output;
    EXPECT_FALSE(contains(out.output, "/nonexistent")) << "numbers are checked before the load";
  }
  EXPECT_FALSE(fs::exists("/tmp/infllm-tests/never.h5"));
}

TEST(RunGuard, PrepareCommandLine) {
  const std::string dir = fresh_dir("guard-prepare-cli");
  fs::create_directories(dir + "/texts");
  for (int i = 0; i < 8; ++i)
    std::ofstream(dir + "/texts/doc" + std::to_string(i) + ".txt") << "document " << i << "\n";
  Outcome ok =
      run("prepare --val-docs 2 --source='cli test' --quiet -o " + dir + "/c.h5 " + dir + "/texts");
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_EQ(data::TokenFile(dir + "/c.val.h5").num_documents(), 2);
  EXPECT_EQ(data::TokenFile(dir + "/c.h5").attributes().source, "cli test");
  EXPECT_EQ(run("prepare --help").exit_code, 0);
  EXPECT_EQ(run("prepare " + dir + "/texts").exit_code, 2);    // no -o
  EXPECT_EQ(run("prepare -o " + dir + "/c.h5").exit_code, 2);  // no input
  EXPECT_EQ(run("prepare --bogus -o " + dir + "/c.h5 " + dir + "/texts").exit_code, 1);
  Outcome missing = run("prepare -o " + dir + "/d.h5 " + dir + "/missing");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(contains(missing.output, "does not exist")) << missing.output;
  fs::remove_all(dir);
}

// `infllm prepare` with a file-size limit (a full disk, without root): one clear message, no
// HDF5 diagnostics, no temp file left, no output file, exit code 1, no crash.
TEST(RunGuard, PrepareOnAFullDiskFailsCleanly) {
  const std::string dir = fresh_dir("guard-prepare-full");
  fs::create_directories(dir + "/texts");
  std::mt19937_64 rng(3);
  for (int f = 0; f < 4; ++f) {
    std::string text(512 << 10, ' ');
    for (char& c : text) c = char('!' + rng() % 90);  // barely compressible
    std::ofstream(dir + "/texts/doc" + std::to_string(f) + ".txt") << text;
  }
  const std::string log = dir + "/prepare.log";
  pid_t child = fork();
  if (child == 0) {
    signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG, as on a full disk
    rlimit limit{256 << 10, 256 << 10};
    setrlimit(RLIMIT_FSIZE, &limit);
    if (FILE* out = std::freopen(log.c_str(), "w", stdout)) dup2(fileno(out), 2);
    execl(INFLLM_BINARY, INFLLM_BINARY, "prepare", "--quiet", "-o", (dir + "/out.h5").c_str(),
          (dir + "/texts").c_str(), (char*)nullptr);
    _exit(127);
  }
  int status = 0;
  waitpid(child, &status, 0);
  const std::string output = read_bytes(log);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << "\n" << output;
  EXPECT_EQ(WEXITSTATUS(status), 1) << output;
  EXPECT_TRUE(contains(output, "disk full")) << output;
  EXPECT_FALSE(contains(output, "HDF5")) << output;
  EXPECT_LE(std::count(output.begin(), output.end(), '\n'), 3) << output;
  for (const auto& entry : fs::directory_iterator(dir))
    EXPECT_EQ(entry.path().filename().string().rfind("out", 0), std::string::npos)
        << "left behind: " << entry.path();
  fs::remove_all(dir);
}

// kill -9 at random moments (start-up, mid-step, mid-checkpoint) of a run that checkpoints
// every step; each time --resume continues; the end result equals an uninterrupted run's bit
// for bit.
TEST(RunGuard, KillNineAtRandomMomentsThenResumeIsBitForBit) {
  const std::string settings = "train.steps=12 checkpoint.every=1 train.eval_every=0 ";
  const std::string straight = fresh_dir("guard-straight"), killed = fresh_dir("guard-killed");
  ASSERT_EQ(run(train_args(straight, settings)).exit_code, 0);
  std::mt19937 rng(20260);
  std::uniform_int_distribution<int> delay_ms(50, 900);
  std::string history;
  for (int attempt = 0; attempt < 6; ++attempt) {
    std::vector<std::string> args = {"train",
                                     kTiny,
                                     "train.out_dir=" + killed,
                                     "train.steps=12",
                                     "checkpoint.every=1",
                                     "train.eval_every=0"};
    if (attempt > 0) args.push_back("--resume");
    pid_t child = start(args);
    const int ms = delay_ms(rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    auto newest = latest_checkpoint(killed + "/checkpoints");
    history += " killed after " + std::to_string(ms) + " ms at " +
               (newest ? fs::path(*newest).filename().string() : "no checkpoint") + ";";
  }
  Outcome finish = run(train_args(killed, settings + "--resume"));
  ASSERT_EQ(finish.exit_code, 0) << history << "\n" << finish.output;
  auto a = final_weights(straight), b = final_weights(killed);
  ASSERT_EQ(a.size(), b.size()) << history;
  for (auto& [name, values] : a) EXPECT_EQ(values, b[name]) << name << " differs after:" << history;
}

}  // namespace
}  // namespace infllm::train
