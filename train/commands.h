// The subcommands of the `infllm` executable. Each returns the process exit code.
#pragma once

namespace infllm::train {

int train_command(int argc, char** argv);
int eval_command(int argc, char** argv);
int generate_command(int argc, char** argv);
int bench_command(int argc, char** argv);
int prepare_command(int argc, char** argv);
int export_command(int argc, char** argv);
int import_command(int argc, char** argv);
int logits_command(int argc, char** argv);

}  // namespace infllm::train
