// One error type for the whole framework: what went wrong, where, and how to fix it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace infllm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Streams any values into one message: fail("matmul: ", a.shape_str(), " vs ", ...).
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  throw Error(out.str());
}

}  // namespace infllm

// Checks a condition at an API boundary; the message parts are only built on failure.
#define INFLLM_CHECK(cond, ...)               \
  do {                                        \
    if (!(cond)) ::infllm::fail(__VA_ARGS__); \
  } while (0)
