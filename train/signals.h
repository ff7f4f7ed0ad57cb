// SIGINT/SIGTERM during training: the first one asks the loop to checkpoint and stop at the end
// of the current step; a second one exits at once (the last checkpoint stays valid).
#pragma once

namespace infllm::train {

void install_stop_handlers();
bool stop_requested();
const char* stop_signal_name();

}  // namespace infllm::train
