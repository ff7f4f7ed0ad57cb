// The command line of `infllm prepare`; argv[0] is the command's own name and is skipped.
#pragma once

namespace infllm::data {

// Returns the process exit code: 0 done, 1 failed (the reason is on stderr), 2 bad usage.
int prepare_main(int argc, char** argv);

}  // namespace infllm::data
