#include "train/signals.h"

#include <unistd.h>
#include <csignal>
#include <cstdlib>

namespace infllm::train {
namespace {

volatile std::sig_atomic_t received = 0;

void on_signal(int signal) {
  if (received) _exit(128 + signal);  // second signal: the user insists
  received = signal;
}

}  // namespace

void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool stop_requested() {
  return received != 0;
}

const char* stop_signal_name() {
  return received == SIGINT ? "SIGINT" : "SIGTERM";
}

}  // namespace infllm::train
