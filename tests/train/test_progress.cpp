// The progress line: number formatting, the line at several widths (least useful parts dropped
// first), the end-of-run summary, live mode redrawn on a pseudo-terminal and plain lines on a
// file.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "train/progress.h"

namespace infllm::train {
namespace {

TEST(Progress, FormatsDurations) {
  EXPECT_EQ(format_duration(0), "00:00");
  EXPECT_EQ(format_duration(42.9), "00:42");
  EXPECT_EQ(format_duration(63), "01:03");
  EXPECT_EQ(format_duration(3599), "59:59");
  EXPECT_EQ(format_duration(3600), "1:00:00");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(86400 + 4 * 3600 + 5 * 60 + 6), "1d 04:05:06");
  EXPECT_EQ(format_duration(-1), "--:--");
  EXPECT_EQ(format_duration(NAN), "--:--");
  EXPECT_EQ(format_duration(INFINITY), "--:--");
}

TEST(Progress, FormatsRatesAndSmallNumbers) {
  EXPECT_EQ(format_rate(950), "950");
  EXPECT_EQ(format_rate(12.34), "12.3");
  EXPECT_EQ(format_rate(45200), "45.2K");
  EXPECT_EQ(format_rate(999400), "999K");
  EXPECT_EQ(format_rate(999600), "1M");
  EXPECT_EQ(format_rate(1.234e6), "1.23M");
  EXPECT_EQ(format_rate(2.5e9), "2.5G");
  EXPECT_EQ(format_rate(NAN), "?");
  EXPECT_EQ(format_scientific(0.003), "3.0e-3");
  EXPECT_EQ(format_scientific(1.5e-4), "1.5e-4");
  EXPECT_EQ(format_scientific(12345), "1.2e4");
  EXPECT_EQ(format_scientific(-2e-5), "-2.0e-5");
  EXPECT_EQ(format_scientific(0), "0");
}

ProgressState example_state() {
  ProgressState s;
  s.step = 120;
  s.total_steps = 300;
  s.loss = 2.345;
  s.lr = 3e-3;
  s.tokens_per_s = 45200;
  s.mfu = 0.31;
  s.memory_gb = 12.3;
  s.memory_total_gb = 80;
  s.elapsed_s = 42;
  s.eta_s = 63;
  return s;
}

TEST(Progress, FullLine) {
  EXPECT_EQ(format_progress_line(example_state(), 0),
            "step 120/300 (40%) | loss 2.345 | lr 3.0e-3 | 45.2K tok/s | MFU 31% | "
            "mem 12.3/80 GB | 00:42 elapsed | ETA 01:03");
}

TEST(Progress, NarrowTerminalsDropTheLeastUsefulPartsFirst) {
  ProgressState s = example_state();
  std::string full = format_progress_line(s, 0);
  EXPECT_EQ(format_progress_line(s, int(full.size())), full);
  EXPECT_EQ(format_progress_line(s, int(full.size()) - 1),
            "step 120/300 (40%) | loss 2.345 | 45.2K tok/s | MFU 31% | mem 12.3/80 GB | "
            "00:42 elapsed | ETA 01:03");
  EXPECT_EQ(format_progress_line(s, 80),
            "step 120/300 (40%) | loss 2.345 | 45.2K tok/s | 00:42 elapsed | ETA 01:03");
  EXPECT_EQ(format_progress_line(s, 60),
            "step 120/300 (40%) | loss 2.345 | 45.2K tok/s | ETA 01:03");
  EXPECT_EQ(format_progress_line(s, 42), "step 120/300 (40%) | ETA 01:03");
  EXPECT_EQ(format_progress_line(s, 10), "step 120/3");
  for (int width = 1; width <= int(full.size()) + 5; ++width) {
    std::string line = format_progress_line(s, width);
    EXPECT_LE(int(line.size()), width);
    EXPECT_EQ(line.substr(0, std::min(width, 12)), std::string("step 120/300").substr(0, width));
  }
}

TEST(Progress, UnknownValuesAreLeftOut) {
  ProgressState s;
  s.step = 5;
  s.total_steps = 10;
  s.loss = NAN;  // a non-finite step
  s.lr = 1e-3;
  EXPECT_EQ(format_progress_line(s, 0), "step 5/10 (50%) | loss nan | lr 1.0e-3 | ETA --:--");
  s.total_steps = 0;
  s.loss = 3.0;
  s.memory_gb = 1.26;
  s.tokens_per_s = 512;
  EXPECT_EQ(format_progress_line(s, 0),
            "step 5 | loss 3.000 | lr 1.0e-3 | 512 tok/s | mem 1.3 GB | ETA --:--");
  s.loss = 1234.6;  // four digits, no dangling decimal point
  EXPECT_NE(format_progress_line(s, 0).find("| loss 1235 |"), std::string::npos);
}

TEST(Progress, Summary) {
  RunSummary r;
  r.first_step = 100;
  r.last_step = 300;
  r.final_loss = 2.345;
  r.final_val_loss = std::log(11.7);
  r.elapsed_s = 754;
  r.tokens = 12.3e6;
  r.peak_memory_gb = 12.34;
  r.run_dir = "runs/tiny";
  EXPECT_EQ(format_summary(r),
            "trained steps 101-300 in 12:34 | loss 2.345 | val loss 2.460 (ppl 11.70) | "
            "12.3M tokens at 16.3K tok/s | peak mem 12.3 GB | run folder runs/tiny");
  RunSummary cpu;
  cpu.last_step = 3;
  cpu.final_loss = 5.5;
  EXPECT_EQ(format_summary(cpu), "trained steps 1-3 in 00:00 | loss 5.500");
}

TEST(Progress, StepTimeAverageSkipsWarmupAndSmooths) {
  StepTimeAverage average(3, 0.1);
  for (int i = 0; i < 3; ++i) average.add(30.0);  // warm-up: ignored
  EXPECT_TRUE(std::isnan(average.seconds_per_step()));
  average.add(1.0);
  EXPECT_DOUBLE_EQ(average.seconds_per_step(), 1.0);
  average.add(2.0);
  EXPECT_DOUBLE_EQ(average.seconds_per_step(), 1.1);
  EXPECT_DOUBLE_EQ(average.eta_seconds(100), 110.0);
}

TEST(Progress, PlainLinesEveryNStepsWhenNotATerminal) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  {
    ProgressLine progress(file, 5);
    EXPECT_FALSE(progress.is_terminal());
    for (int64_t step = 1; step <= 12; ++step) {
      ProgressState s;
      s.step = step;
      s.total_steps = 12;
      s.loss = 1.5;
      progress.update(s, 2.0);
    }
  }
  std::rewind(file);
  std::string text(4096, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), file));
  std::fclose(file);
  // Steps 5 and 10 and the last; 2 s per step after the 3 warm-up steps.
  EXPECT_EQ(text,
            "step 5/12 (41%) | loss 1.500 | ETA 00:14\n"
            "step 10/12 (83%) | loss 1.500 | ETA 00:04\n"
            "step 12/12 (100%) | loss 1.500 | ETA 00:00\n");
}

TEST(Progress, LiveLineOnATerminalIsRedrawnInPlaceWithinItsWidth) {
  int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
    GTEST_SKIP() << "no pseudo-terminal available: " << std::strerror(errno);
  }
  winsize size{};
  size.ws_col = 50;
  size.ws_row = 24;
  ASSERT_EQ(ioctl(master, TIOCSWINSZ, &size), 0);
  std::FILE* terminal = std::fopen(ptsname(master), "w");
  ASSERT_NE(terminal, nullptr);
  const char* old_term = std::getenv("TERM");
  std::string saved_term = old_term ? old_term : "";
  setenv("TERM", "xterm", 1);
  {
    ProgressLine progress(terminal, 5);
    EXPECT_TRUE(progress.is_terminal());
    EXPECT_EQ(terminal_width(terminal), 50);
    ProgressState s = example_state();
    progress.update(s, 1.0);
    progress.clear();
    s.step = 121;
    progress.update(s, 1.0);
    progress.finish();
  }
  if (old_term)
    setenv("TERM", saved_term.c_str(), 1);
  else
    unsetenv("TERM");
  // Read while the terminal is still open (the line discipline hands the bytes over
  // asynchronously): until a poll's timeout passes with nothing more to read.
  std::string text;
  pollfd ready{master, POLLIN, 0};
  char buffer[1024];
  while (poll(&ready, 1, 200) > 0) {
    ssize_t n = read(master, buffer, sizeof(buffer));
    if (n <= 0) break;
    text.append(buffer, size_t(n));
  }
  std::fclose(terminal);
  close(master);
  // 49 columns at most (one stays free so the terminal never wraps); the terminal turns the
  // final newline into "\r\n".
  EXPECT_EQ(text,
            "\r\x1b[Kstep 120/300 (40%) | loss 2.345 | ETA 01:03"
            "\r\x1b[K"
            "\r\x1b[Kstep 121/300 (40%) | loss 2.345 | ETA 01:03\r\n");
}

}  // namespace
}  // namespace infllm::train
