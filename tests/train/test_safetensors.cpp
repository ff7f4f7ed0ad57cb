// safetensors files: round trips in f32 and bf16, metadata, F16 reads, sharded folders, and
// the error of every malformed header on files the test writes byte by byte.
#include "train/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "core/bf16.h"
#include "tests/data/test_util.h"

namespace infllm::train {
namespace {

using data::testing::expect_error;
using data::testing::TempDir;

// A file of `header` (padded by nothing) and `data_bytes` zero bytes.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes,
               uint64_t header_len = UINT64_MAX) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header_len == UINT64_MAX ? header.size() : header_len;
  for (int i = 0; i < 8; ++i) out.put(char((n >> (8 * i)) & 0xff));
  out << header << std::string(data_bytes, '\0');
}

TEST(Safetensors, RoundTripF32ExactlyWithMetadata) {
  TempDir dir;
  Tensor a = Tensor::from_vector<float>({1.5f, -2.25f, 3e-8f, 1e30f, 0, 7}, {2, 3});
  Tensor b = Tensor::from_vector<float>({42.f}, {1});
  write_safetensors(dir.file("m.safetensors"), {{"w.a", a}, {"b", b}}, DType::f32,
                    {{"format", "pt"}, {"note", "quote \" and \\ back"}});
  Safetensors read = read_safetensors(dir.file("m.safetensors"));
  ASSERT_EQ(read.tensors.size(), 2u);
  EXPECT_EQ(read.tensors[0].first, "b");
  EXPECT_EQ(read.tensors[1].first, "w.a");
  EXPECT_EQ(read.tensors[1].second.shape(), (Shape{2, 3}));
  EXPECT_EQ(read.tensors[1].second.to_vector<float>(), a.to_vector<float>());
  EXPECT_EQ(read.tensors[0].second.to_vector<float>(), b.to_vector<float>());
  EXPECT_EQ(read.dtypes.at("w.a"), "F32");
  EXPECT_EQ(read.metadata.at("format"), "pt");
  EXPECT_EQ(read.metadata.at("note"), "quote \" and \\ back");
}

TEST(Safetensors, Bf16WritesRoundToBf16) {
  TempDir dir;
  std::vector<float> values{1.0f, 1.00390625f, -3.14159f, 65504.f};
  write_safetensors(dir.file("m.safetensors"), {{"x", Tensor::from_vector(values, {4})}},
                    DType::bf16);
  Safetensors read = read_safetensors(dir.file("m.safetensors"));
  EXPECT_EQ(read.dtypes.at("x"), "BF16");
  const std::vector<float> got = read.tensors[0].second.to_vector<float>();
  for (size_t i = 0; i < values.size(); ++i)
    EXPECT_EQ(got[i], bf16_to_float(float_to_bf16(values[i])));
}

TEST(Safetensors, ReadsF16) {
  TempDir dir;
  const std::string header = R"({"h":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})";
  std::ofstream out(dir.file("h.safetensors"), std::ios::binary);
  for (int i = 0; i < 8; ++i) out.put(char((header.size() >> (8 * i)) & 0xff));
  out << header;
  // 1.0, -2.0, 65504 (largest half), 2^-24 (smallest subnormal)
  for (uint16_t bits : {uint16_t(0x3c00), uint16_t(0xc000), uint16_t(0x7bff), uint16_t(0x0001)})
    out.put(char(bits & 0xff)).put(char(bits >> 8));
  out.close();
  const std::vector<float> got =
      read_safetensors(dir.file("h.safetensors")).tensors[0].second.to_vector<float>();
  EXPECT_EQ(got, (std::vector<float>{1.0f, -2.0f, 65504.f, 5.9604644775390625e-8f}));
}

TEST(Safetensors, ShardedFolder) {
  TempDir dir;
  write_safetensors(dir.file("model-00001-of-00002.safetensors"),
                    {{"a", Tensor::from_vector<float>({1, 2}, {2})}}, DType::f32);
  write_safetensors(dir.file("model-00002-of-00002.safetensors"),
                    {{"b", Tensor::from_vector<float>({3}, {1})}}, DType::f32);
  {
    std::ofstream index(dir.file("model.safetensors.index.json"));
    index
        << R"({"metadata": {"total_size": 12}, "weight_map": {)"
        << R"("a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})";
  }
  Safetensors read = read_safetensors_folder(dir.path().string());
  ASSERT_EQ(read.tensors.size(), 2u);
  EXPECT_EQ(read.tensors[1].second.to_vector<float>(), (std::vector<float>{3}));
  {
    std::ofstream index(dir.file("model.safetensors.index.json"));
    index << R"({"weight_map": {"a": "model-00002-of-00002.safetensors"}})";
  }
  expect_error([&] { read_safetensors_folder(dir.path().string()); },
               {"model-00002-of-00002.safetensors", "'b'", "weight_map"});
  TempDir empty;
  expect_error([&] { read_safetensors_folder(empty.path().string()); },
               {"neither model.safetensors"});
}

TEST(Safetensors, MalformedHeadersAreNamedErrors) {
  TempDir dir;
  const std::string f = dir.file("bad.safetensors");
  auto expect_bad = [&](const std::string& header, size_t data,
                        std::initializer_list<std::string_view> parts,
                        uint64_t header_len = UINT64_MAX) {
    write_raw(f, header, data, header_len);
    expect_error([&] { read_safetensors(f); }, parts);
    expect_error([&] { read_safetensors(f); }, {f});
  };
  {
    std::ofstream(f, std::ios::binary) << "abc";
    expect_error([&] { read_safetensors(f); }, {f, "too short"});
  }
  expect_bad("{}", 0, {"bad header length 1000"}, 1000);
  expect_bad("{}", 0, {"bad header length"}, uint64_t(1) << 40);
  expect_bad("{\"a\": [1, 2", 0, {"not valid JSON"});
  expect_bad("[1, 2]", 0, {"not a JSON object"});
  expect_bad(R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}})", 4,
             {"'a'", "unknown dtype 'Q4'"});
  expect_bad(R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8,
             {"'a'", "dtype I64", "does not read"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4,
             {"'a'", "run past the data section", "truncated"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8,
             {"'a'", "needs 12 bytes", "hold 8"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8,
             {"'a'", "end before they begin"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
             12, {"'a'", "'b'", "overlap"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4,
             {"'a'", "shape[0]", "negative"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4,
             {"'a'", "data_offsets [begin, end]"});
  expect_bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}})", 4,
             {"'a'", "unknown key 'extra'"});
  expect_bad(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4, {"'a'", "no dtype"});
  expect_bad(R"({"__metadata__":[1]})", 0, {"__metadata__ is not an object"});
  expect_error([&] { read_safetensors(dir.file("missing.safetensors")); }, {"cannot open"});
}

TEST(Safetensors, WriterRejectsDuplicatesAndOtherDtypes) {
  TempDir dir;
  Tensor a = Tensor::from_vector<float>({1}, {1});
  expect_error(
      [&] {
        write_safetensors(dir.file("x"), {{"a", a}, {"a", a}}, DType::f32);
      },
      {"'a'", "twice"});
  expect_error([&] { write_safetensors(dir.file("x"), {{"a", a}}, DType::f64); }, {"f32 or bf16"});
}

}  // namespace
}  // namespace infllm::train
