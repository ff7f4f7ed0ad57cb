#include "data/token_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "core/error.h"

namespace infllm::data {

namespace {

constexpr hsize_t kTokenChunk = 1 << 16;   // 128 KiB of u16: one random window decodes ~1 chunk
constexpr hsize_t kOffsetChunk = 1 << 12;  // documents per /doc_offsets chunk
constexpr size_t kTokenBuffer = 1 << 20;   // tokens held before a write
constexpr size_t kOffsetBuffer = 1 << 14;
constexpr int kDeflateLevel = 6;
constexpr size_t kChunkCacheBytes = 64 << 20;  // per open /tokens: the shipped corpus fits
constexpr size_t kChunkCacheSlots = 12421;     // prime, ~10x the chunks the cache can hold

const char* const kRebuildHint = "rebuild it with `infllm prepare -o OUT INPUT...`";

// Creates a growing 1-D chunked dataset (shuffle + deflate: token ids are small integers whose
// high bytes are mostly zero, which shuffle groups together for deflate).
H5Handle create_growing_dataset(hid_t file, const char* name, hid_t file_type, hsize_t chunk) {
  const hsize_t initial = 0;
  const hsize_t unlimited = H5S_UNLIMITED;
  H5Handle space(H5Screate_simple(1, &initial, &unlimited));
  H5Handle properties(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_chunk(properties.get(), 1, &chunk);
  H5Pset_shuffle(properties.get());
  H5Pset_deflate(properties.get(), kDeflateLevel);
  H5Pset_obj_track_times(properties.get(), false);  // same input, same bytes: reproducible files
  return H5Handle(
      H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, properties.get(), H5P_DEFAULT));
}

// Writes `count` elements of `memory_type` at the end of a growing 1-D dataset.
void append_to_dataset(hid_t dataset, hid_t memory_type, const void* data, hsize_t count,
                       int64_t& written, const std::string& path, const char* name) {
  if (count == 0) return;
  const hsize_t start = written;
  const hsize_t new_size = start + count;
  herr_t status = H5Dset_extent(dataset, &new_size);
  H5Handle file_space(H5Dget_space(dataset));
  if (status >= 0)
    status =
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr);
  H5Handle memory_space(H5Screate_simple(1, &count, nullptr));
  if (status >= 0)
    status =
        H5Dwrite(dataset, memory_type, memory_space.get(), file_space.get(), H5P_DEFAULT, data);
  INFLLM_CHECK(status >= 0, "token file '", path, "': writing ", count, " elements to ", name,
               " failed (disk full or no write permission in the output folder?)");
  written += count;
}

void write_attribute(hid_t file, const char* name, hid_t type, const void* value,
                     const std::string& path) {
  H5Handle space(H5Screate(H5S_SCALAR));
  H5Handle attribute(H5Acreate2(file, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  INFLLM_CHECK(attribute.valid() && H5Awrite(attribute.get(), type, value) >= 0, "token file '",
               path, "': writing attribute ", name, " failed");
}

// Variable-length UTF-8 string: h5py reads it back as a Python str.
void write_string_attribute(hid_t file, const char* name, const std::string& value,
                            const std::string& path) {
  H5Handle type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  const char* text = value.c_str();
  write_attribute(file, name, type.get(), &text, path);
}

void fsync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  INFLLM_CHECK(fd >= 0, "token file '", path, "': cannot reopen it to flush it to disk");
  const int status = ::fsync(fd);
  ::close(fd);
  INFLLM_CHECK(status == 0, "token file '", path, "': fsync failed (disk full?)");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Writer

TokenFileWriter::TokenFileWriter(std::string path, TokenFileAttributes attributes)
    : path_(std::move(path)), attributes_(std::move(attributes)) {
  INFLLM_CHECK(attributes_.vocab_size > 0 && attributes_.vocab_size <= (int64_t{1} << 32),
               "token file '", path_, "': vocab_size ", attributes_.vocab_size,
               " must be in [1, 2^32]");
  INFLLM_CHECK(!attributes_.tokenizer.empty(), "token file '", path_,
               "': the tokenizer attribute must name the tokenizer (e.g. \"byte\")");
  temp_path_ = path_ + ".tmp." + std::to_string(::getpid());
  std::lock_guard lock(hdf5_mutex());
  H5E_BEGIN_TRY {
    file_ = H5Handle(H5Fcreate(temp_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  }
  H5E_END_TRY;
  INFLLM_CHECK(file_.valid(), "token file '", path_, "': cannot create '", temp_path_,
               "'; does the output folder exist and is it writable?");
  const hid_t token_type = attributes_.vocab_size <= 65536 ? H5T_STD_U16LE : H5T_STD_U32LE;
  tokens_ = create_growing_dataset(file_.get(), "/tokens", token_type, kTokenChunk);
  offsets_ = create_growing_dataset(file_.get(), "/doc_offsets", H5T_STD_I64LE, kOffsetChunk);
  if (!tokens_.valid() || !offsets_.valid()) {
    tokens_.reset();
    offsets_.reset();
    file_.reset();
    std::remove(temp_path_.c_str());
    fail("token file '", path_, "': creating the datasets in '", temp_path_, "' failed");
  }
  token_buffer_.reserve(kTokenBuffer);
  offset_buffer_.reserve(kOffsetBuffer);
}

TokenFileWriter::~TokenFileWriter() {
  if (closed_) return;
  std::lock_guard lock(hdf5_mutex());
  tokens_.reset();
  offsets_.reset();
  file_.reset();
  std::remove(temp_path_.c_str());
}

void TokenFileWriter::append_tokens(std::span<const uint32_t> tokens) {
  INFLLM_CHECK(!finished_, "token file '", path_, "': append after close()");
  if (tokens.empty()) return;
  for (size_t i = 0; i < tokens.size(); ++i) {
    INFLLM_CHECK(tokens[i] < attributes_.vocab_size, "token file '", path_, "': token ", tokens[i],
                 " (document ", num_documents_ - (document_open_ ? 1 : 0),
                 ") is outside the vocabulary [0, ", attributes_.vocab_size, ")");
  }
  if (!document_open_) {
    offset_buffer_.push_back(num_tokens_);
    ++num_documents_;
    document_open_ = true;
    if (offset_buffer_.size() >= kOffsetBuffer) flush_offsets();
  }
  size_t done = 0;
  while (done < tokens.size()) {
    const size_t take = std::min(tokens.size() - done, kTokenBuffer - token_buffer_.size());
    token_buffer_.insert(token_buffer_.end(), tokens.begin() + done, tokens.begin() + done + take);
    done += take;
    if (token_buffer_.size() == kTokenBuffer) flush_tokens();
  }
  num_tokens_ += tokens.size();
}

void TokenFileWriter::end_document() {
  INFLLM_CHECK(document_open_, "token file '", path_, "': end_document() without tokens; ",
               "empty documents are not stored (skip them before writing)");
  document_open_ = false;
}

void TokenFileWriter::append_document(std::span<const uint32_t> tokens) {
  INFLLM_CHECK(!tokens.empty(), "token file '", path_, "': document ", num_documents_,
               " is empty; empty documents are not stored (skip them before writing)");
  INFLLM_CHECK(!document_open_, "token file '", path_,
               "': append_document() while a document is open; call end_document() first");
  append_tokens(tokens);
  end_document();
}

void TokenFileWriter::flush_tokens() {
  std::lock_guard lock(hdf5_mutex());
  append_to_dataset(tokens_.get(), H5T_NATIVE_UINT32, token_buffer_.data(), token_buffer_.size(),
                    tokens_written_, path_, "/tokens");
  token_buffer_.clear();
}

void TokenFileWriter::flush_offsets() {
  std::lock_guard lock(hdf5_mutex());
  append_to_dataset(offsets_.get(), H5T_NATIVE_INT64, offset_buffer_.data(), offset_buffer_.size(),
                    offsets_written_, path_, "/doc_offsets");
  offset_buffer_.clear();
}

void TokenFileWriter::close() {
  finish();
  publish();
}

void TokenFileWriter::finish() {
  INFLLM_CHECK(!finished_, "token file '", path_, "': finish() or close() called twice");
  INFLLM_CHECK(!document_open_, "token file '", path_,
               "': close() while a document is open; call end_document() first");
  flush_tokens();
  flush_offsets();
  {
    std::lock_guard lock(hdf5_mutex());
    write_attribute(file_.get(), "vocab_size", H5T_NATIVE_INT64, &attributes_.vocab_size, path_);
    write_string_attribute(file_.get(), "tokenizer", attributes_.tokenizer, path_);
    write_string_attribute(file_.get(), "source", attributes_.source, path_);
    tokens_.reset();
    offsets_.reset();
    INFLLM_CHECK(H5Fflush(file_.get(), H5F_SCOPE_GLOBAL) >= 0, "token file '", path_,
                 "': flushing failed (disk full?)");
    file_.reset();
  }
  fsync_file(temp_path_);
  finished_ = true;
}

void TokenFileWriter::publish() {
  INFLLM_CHECK(finished_ && !closed_, "token file '", path_,
               "': publish() needs one finish() before it");
  std::error_code error;
  std::filesystem::rename(temp_path_, path_, error);
  INFLLM_CHECK(!error, "token file '", path_, "': renaming '", temp_path_,
               "' onto it failed: ", error.message());
  closed_ = true;
}

// ---------------------------------------------------------------------------------------------
// Reader

namespace {

// Checks that `name` is a 1-D dataset of integers with the given byte sizes and signedness;
// returns its element size.
int check_integer_dataset(hid_t dataset, const std::string& path, const char* name,
                          std::initializer_list<size_t> sizes, H5T_sign_t sign,
                          const char* expected) {
  H5Handle space(H5Dget_space(dataset));
  INFLLM_CHECK(H5Sget_simple_extent_ndims(space.get()) == 1, "token file '", path, "': dataset ",
               name, " must be 1-D, it has ", H5Sget_simple_extent_ndims(space.get()),
               " dimensions; ", kRebuildHint);
  H5Handle type(H5Dget_type(dataset));
  const size_t size = H5Tget_size(type.get());
  const bool ok = H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_sign(type.get()) == sign &&
                  std::find(sizes.begin(), sizes.end(), size) != sizes.end();
  INFLLM_CHECK(ok, "token file '", path, "': dataset ", name, " must hold ", expected,
               ", it holds ", H5Tget_class(type.get()) == H5T_INTEGER ? "" : "non-", "integers of ",
               size, " bytes", H5Tget_sign(type.get()) == H5T_SGN_NONE ? " (unsigned)" : "", "; ",
               kRebuildHint);
  return static_cast<int>(size);
}

int64_t dataset_length(hid_t dataset) {
  H5Handle space(H5Dget_space(dataset));
  hsize_t length = 0;
  H5Sget_simple_extent_dims(space.get(), &length, nullptr);
  return static_cast<int64_t>(length);
}

H5Handle open_dataset(hid_t file, const char* name, const std::string& path, hid_t access) {
  INFLLM_CHECK(H5Lexists(file, name, H5P_DEFAULT) > 0, "token file '", path, "': dataset ", name,
               " is missing; it is not a token file, ", kRebuildHint);
  H5Handle dataset(H5Dopen2(file, name, access));
  INFLLM_CHECK(dataset.valid(), "token file '", path, "': ", name, " is not a dataset; ",
               kRebuildHint);
  return dataset;
}

H5Handle open_attribute(hid_t file, const char* name, H5T_class_t type_class, const char* expected,
                        const std::string& path) {
  INFLLM_CHECK(H5Aexists(file, name) > 0, "token file '", path, "': attribute ", name,
               " is missing (expected ", expected, " on the root group); ", kRebuildHint);
  H5Handle attribute(H5Aopen(file, name, H5P_DEFAULT));
  H5Handle space(H5Aget_space(attribute.get()));
  H5Handle type(H5Aget_type(attribute.get()));
  INFLLM_CHECK(
      H5Tget_class(type.get()) == type_class && H5Sget_simple_extent_npoints(space.get()) == 1,
      "token file '", path, "': attribute ", name, " must be one ", expected, "; ", kRebuildHint);
  return attribute;
}

std::string read_string_attribute(hid_t file, const char* name, const std::string& path) {
  H5Handle attribute = open_attribute(file, name, H5T_STRING, "string", path);
  H5Handle type(H5Aget_type(attribute.get()));
  if (H5Tis_variable_str(type.get()) > 0) {
    char* text = nullptr;
    H5Handle memory_type(H5Tcopy(H5T_C_S1));
    H5Tset_size(memory_type.get(), H5T_VARIABLE);
    H5Tset_cset(memory_type.get(), H5Tget_cset(type.get()));
    INFLLM_CHECK(H5Aread(attribute.get(), memory_type.get(), &text) >= 0, "token file '", path,
                 "': reading attribute ", name, " failed");
    std::string value = text ? text : "";
    H5free_memory(text);
    return value;
  }
  std::string value(H5Tget_size(type.get()), '\0');
  INFLLM_CHECK(H5Aread(attribute.get(), type.get(), value.data()) >= 0, "token file '", path,
               "': reading attribute ", name, " failed");
  value.resize(value.find('\0') == std::string::npos ? value.size() : value.find('\0'));
  return value;
}

}  // namespace

TokenFile::TokenFile(std::string path) : path_(std::move(path)) {
  INFLLM_CHECK(std::filesystem::exists(path_), "token file '", path_,
               "' does not exist; check the path, or create it with `infllm prepare -o ", path_,
               " INPUT...`");
  std::lock_guard lock(hdf5_mutex());
  H5E_BEGIN_TRY {
    file_ = H5Handle(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  }
  H5E_END_TRY;
  INFLLM_CHECK(file_.valid(), "token file '", path_,
               "' is not a readable HDF5 file (truncated, or another format?); ", kRebuildHint);

  H5Handle access(H5Pcreate(H5P_DATASET_ACCESS));
  H5Pset_chunk_cache(access.get(), kChunkCacheSlots, kChunkCacheBytes, H5D_CHUNK_CACHE_W0_DEFAULT);
  tokens_ = open_dataset(file_.get(), "/tokens", path_, access.get());
  offsets_ = open_dataset(file_.get(), "/doc_offsets", path_, H5P_DEFAULT);
  token_bytes_ = check_integer_dataset(tokens_.get(), path_, "/tokens", {2, 4}, H5T_SGN_NONE,
                                       "unsigned 16- or 32-bit integers (u16/u32)");
  check_integer_dataset(offsets_.get(), path_, "/doc_offsets", {8}, H5T_SGN_2,
                        "signed 64-bit integers (i64)");
  num_tokens_ = dataset_length(tokens_.get());
  num_documents_ = dataset_length(offsets_.get());

  {
    H5Handle attribute = open_attribute(file_.get(), "vocab_size", H5T_INTEGER, "integer", path_);
    INFLLM_CHECK(H5Aread(attribute.get(), H5T_NATIVE_INT64, &attributes_.vocab_size) >= 0,
                 "token file '", path_, "': reading attribute vocab_size failed");
  }
  attributes_.tokenizer = read_string_attribute(file_.get(), "tokenizer", path_);
  attributes_.source = read_string_attribute(file_.get(), "source", path_);
  const int64_t max_vocab = token_bytes_ == 2 ? 65536 : (int64_t{1} << 32);
  INFLLM_CHECK(attributes_.vocab_size > 0 && attributes_.vocab_size <= max_vocab, "token file '",
               path_, "': attribute vocab_size = ", attributes_.vocab_size,
               " does not fit /tokens stored as u", 8 * token_bytes_, " (allowed: 1..", max_vocab,
               "); ", kRebuildHint);
  validate_doc_offsets();
}

TokenFile::~TokenFile() {
  std::lock_guard lock(hdf5_mutex());
  tokens_.reset();
  offsets_.reset();
  file_.reset();
}

void TokenFile::validate_doc_offsets() const {
  INFLLM_CHECK((num_tokens_ == 0) == (num_documents_ == 0), "token file '", path_,
               "': /tokens has ", num_tokens_, " tokens but /doc_offsets lists ", num_documents_,
               " documents; every token belongs to a document; ", kRebuildHint);
  // Checked block by block so that a corpus of many documents never needs all offsets in memory.
  constexpr int64_t kBlock = 1 << 16;
  std::vector<int64_t> block;
  int64_t previous = -1;
  for (int64_t first = 0; first < num_documents_; first += kBlock) {
    const int64_t count = std::min(kBlock, num_documents_ - first);
    block.resize(count);
    const hsize_t start = first;
    const hsize_t length = count;
    H5Handle file_space(H5Dget_space(offsets_.get()));
    H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &length, nullptr);
    H5Handle memory_space(H5Screate_simple(1, &length, nullptr));
    INFLLM_CHECK(H5Dread(offsets_.get(), H5T_NATIVE_INT64, memory_space.get(), file_space.get(),
                         H5P_DEFAULT, block.data()) >= 0,
                 "token file '", path_, "': reading /doc_offsets failed (file damaged?)");
    for (int64_t i = 0; i < count; ++i) {
      const int64_t offset = block[i];
      const int64_t doc = first + i;
      INFLLM_CHECK(doc > 0 || offset == 0, "token file '", path_,
                   "': /doc_offsets[0] must be 0 (the first document starts the stream), it is ",
                   offset, "; ", kRebuildHint);
      INFLLM_CHECK(offset > previous, "token file '", path_, "': /doc_offsets must be strictly ",
                   "increasing, but /doc_offsets[", doc, "] = ", offset, " follows ", previous,
                   "; ", kRebuildHint);
      INFLLM_CHECK(offset < num_tokens_, "token file '", path_, "': /doc_offsets[", doc,
                   "] = ", offset, " is out of range (/tokens has ", num_tokens_, " tokens); ",
                   kRebuildHint);
      previous = offset;
    }
  }
}

void TokenFile::read(int64_t begin, int64_t end, uint32_t* out) const {
  INFLLM_CHECK(0 <= begin && begin <= end && end <= num_tokens_, "token file '", path_,
               "': read of tokens [", begin, ", ", end, ") is outside [0, ", num_tokens_, ")");
  if (begin == end) return;
  {
    std::lock_guard lock(hdf5_mutex());
    const hsize_t start = begin;
    const hsize_t count = end - begin;
    H5Handle file_space(H5Dget_space(tokens_.get()));
    H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr);
    H5Handle memory_space(H5Screate_simple(1, &count, nullptr));
    INFLLM_CHECK(H5Dread(tokens_.get(), H5T_NATIVE_UINT32, memory_space.get(), file_space.get(),
                         H5P_DEFAULT, out) >= 0,
                 "token file '", path_, "': reading /tokens [", begin, ", ", end,
                 ") failed (file damaged?)");
  }
  // A corrupt or mislabeled file would otherwise index out of the embedding table.
  for (int64_t i = 0; i < end - begin; ++i) {
    INFLLM_CHECK(int64_t{out[i]} < vocab_size(), "token file '", path_, "': /tokens[", begin + i,
                 "] = ", out[i], " is outside the vocabulary (vocab_size ", vocab_size(), "); ",
                 kRebuildHint);
  }
}

std::vector<uint32_t> TokenFile::read(int64_t begin, int64_t end) const {
  INFLLM_CHECK(begin <= end, "token file '", path_, "': read of tokens [", begin, ", ", end,
               ") has end < begin");
  std::vector<uint32_t> tokens(end - begin);
  read(begin, end, tokens.data());
  return tokens;
}

std::vector<int64_t> TokenFile::doc_offsets() const {
  std::vector<int64_t> offsets(num_documents_);
  if (num_documents_ == 0) return offsets;
  std::lock_guard lock(hdf5_mutex());
  INFLLM_CHECK(
      H5Dread(offsets_.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, offsets.data()) >= 0,
      "token file '", path_, "': reading /doc_offsets failed (file damaged?)");
  return offsets;
}

}  // namespace infllm::data
