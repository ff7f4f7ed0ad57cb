// Helpers shared by the data tests: a temporary folder, and a raw HDF5 writer that can produce
// token files the real writer refuses to write (to test the reader's validation).
#pragma once

#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/hdf5_handle.h"
#include "tests/test_util.h"

namespace infllm::data::testing {

// A fresh folder named after the running test, removed at the end.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("infllm_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" +
             std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Everything a token file may contain, each part optional or of any type, written with the
// HDF5 C API directly.
struct RawTokenFile {
  std::optional<hid_t> token_type = H5T_STD_U16LE;  // nullopt: no /tokens
  int token_rank = 1;                               // 2: /tokens shaped [n/2, 2]
  std::vector<uint32_t> tokens;
  std::optional<hid_t> offset_type = H5T_STD_I64LE;  // nullopt: no /doc_offsets
  std::vector<int64_t> offsets;
  std::optional<int64_t> vocab_size = 258;
  bool vocab_size_as_string = false;
  std::optional<std::string> tokenizer = "byte";
  bool tokenizer_as_integer = false;
  std::optional<std::string> source = "test";
  bool fixed_length_strings = false;  // as h5py writes numpy bytes
};

inline void write_string_attribute(hid_t file, const char* name, const std::string& value,
                                   bool fixed_length) {
  H5Handle type(H5Tcopy(H5T_C_S1));
  H5Handle space(H5Screate(H5S_SCALAR));
  if (fixed_length) {
    H5Tset_size(type.get(), value.size() + 1);
    H5Handle attribute(H5Acreate2(file, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_GE(H5Awrite(attribute.get(), type.get(), value.c_str()), 0);
  } else {
    H5Tset_size(type.get(), H5T_VARIABLE);
    const char* text = value.c_str();
    H5Handle attribute(H5Acreate2(file, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_GE(H5Awrite(attribute.get(), type.get(), &text), 0);
  }
}

inline void write_int_attribute(hid_t file, const char* name, int64_t value) {
  H5Handle space(H5Screate(H5S_SCALAR));
  H5Handle attribute(H5Acreate2(file, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  ASSERT_GE(H5Awrite(attribute.get(), H5T_NATIVE_INT64, &value), 0);
}

inline void write_raw_token_file(const std::string& path, const RawTokenFile& spec) {
  H5Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  ASSERT_TRUE(file.valid());
  if (spec.token_type) {
    hsize_t dims[2] = {spec.tokens.size(), 1};
    if (spec.token_rank == 2) {
      dims[0] /= 2;
      dims[1] = 2;
    }
    H5Handle space(H5Screate_simple(spec.token_rank, dims, nullptr));
    H5Handle dataset(H5Dcreate2(file.get(), "/tokens", *spec.token_type, space.get(), H5P_DEFAULT,
                                H5P_DEFAULT, H5P_DEFAULT));
    if (!spec.tokens.empty()) {
      ASSERT_GE(H5Dwrite(dataset.get(), H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                         spec.tokens.data()),
                0);
    }
  }
  if (spec.offset_type) {
    const hsize_t count = spec.offsets.size();
    H5Handle space(H5Screate_simple(1, &count, nullptr));
    H5Handle dataset(H5Dcreate2(file.get(), "/doc_offsets", *spec.offset_type, space.get(),
                                H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (count > 0) {
      ASSERT_GE(H5Dwrite(dataset.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                         spec.offsets.data()),
                0);
    }
  }
  if (spec.vocab_size) {
    if (spec.vocab_size_as_string) {
      write_string_attribute(file.get(), "vocab_size", std::to_string(*spec.vocab_size), false);
    } else {
      write_int_attribute(file.get(), "vocab_size", *spec.vocab_size);
    }
  }
  if (spec.tokenizer) {
    if (spec.tokenizer_as_integer) {
      write_int_attribute(file.get(), "tokenizer", 1);
    } else {
      write_string_attribute(file.get(), "tokenizer", *spec.tokenizer, spec.fixed_length_strings);
    }
  }
  if (spec.source) {
    write_string_attribute(file.get(), "source", *spec.source, spec.fixed_length_strings);
  }
}

// A well-formed file: `docs` random documents of random length with tokens in [0, vocab).
inline RawTokenFile random_raw_file(std::mt19937_64& rng, int docs, int64_t vocab) {
  RawTokenFile spec;
  spec.vocab_size = vocab;
  spec.token_type = vocab <= 65536 ? H5T_STD_U16LE : H5T_STD_U32LE;
  std::uniform_int_distribution<int> length(1, 300);
  std::uniform_int_distribution<int64_t> token(0, vocab - 1);
  for (int d = 0; d < docs; ++d) {
    spec.offsets.push_back(static_cast<int64_t>(spec.tokens.size()));
    const int n = length(rng);
    for (int i = 0; i < n; ++i) spec.tokens.push_back(static_cast<uint32_t>(token(rng)));
  }
  return spec;
}

using ::infllm::testing::expect_error;  // tests/test_util.h

}  // namespace infllm::data::testing
