// Command-line options of the benchmarks: "--name value" pairs, each applied by a setter.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace infllm::bench {

using Setter = std::function<void(const char*)>;

// "16384,32768" -> {16384, 32768}; zeros are dropped, so "0" skips that measurement.
inline std::vector<int> parse_list(const char* s) {
  std::vector<int> out;
  for (const char* p = s; *p;) {
    if (std::atoi(p) > 0) out.push_back(std::atoi(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return out;
}

inline Setter list_option(std::vector<int>& x) {
  return [&x](const char* v) { x = parse_list(v); };
}
inline Setter int_option(int& x) {
  return [&x](const char* v) { x = std::atoi(v); };
}

// Applies every "--name value" pair of argv; on an unknown name or a missing value prints what
// `program` accepts and returns false.
inline bool parse_options(int argc, char** argv, const char* program,
                          const std::map<std::string, Setter>& setters) {
  for (int i = 1; i < argc; i += 2) {
    const auto it = setters.find(argv[i]);
    if (it == setters.end() || i + 1 >= argc) {
      std::fprintf(stderr, "%s: %s %s; options:", program,
                   it == setters.end() ? "unknown option" : "no value after", argv[i]);
      for (const auto& [name, setter] : setters) std::fprintf(stderr, " %s", name.c_str());
      std::fprintf(stderr, " (see the source file's header)\n");
      return false;
    }
    it->second(argv[i + 1]);
  }
  return true;
}

}  // namespace infllm::bench
