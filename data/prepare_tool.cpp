// Stand-alone `infllm_prepare` until the `infllm` executable hosts the prepare subcommand.
#include "data/prepare_main.h"

int main(int argc, char** argv) {
  return infllm::data::prepare_main(argc, argv);
}
