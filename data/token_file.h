// The HDF5 token file: the one on-disk format for training data.
//
//   /tokens       1-D u16 (vocab_size <= 65536) or u32, chunked, shuffle + deflate
//   /doc_offsets  1-D i64, start index in /tokens of each document, strictly increasing from 0
//   attributes on the root group: vocab_size (integer), tokenizer (string), source (string)
//
// Any tokenizer's output written in this layout trains; `tokenizer` names how to decode it:
// "byte" (data/byte_tokenizer.h, `infllm prepare`) or "hf-tokenizer:" and the first 16 hex
// digits of the SHA-256 of the Hugging Face tokenizer.json (scripts/prepare-hf writes the same
// layout; data/hf_tokenizer.h).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "data/hdf5_handle.h"

namespace infllm::data {

struct TokenFileAttributes {
  int64_t vocab_size = 0;
  std::string tokenizer;  // "byte" or "hf-tokenizer:<16 hex digits>"
  std::string source;     // where the text came from (free-form, for people)
};

// Streams documents into a new token file. Only a bounded buffer is held in memory. The data
// goes to a temporary file beside `path` that close() fsyncs and renames onto `path`, so a
// reader never sees a half-written file; a writer destroyed without close() deletes it.
class TokenFileWriter {
 public:
  TokenFileWriter(std::string path, TokenFileAttributes attributes);
  ~TokenFileWriter();
  TokenFileWriter(const TokenFileWriter&) = delete;
  TokenFileWriter& operator=(const TokenFileWriter&) = delete;

  // Adds tokens to the current document (the first call after end_document() starts one).
  void append_tokens(std::span<const uint32_t> tokens);
  // Closes the current document; a document must hold at least one token.
  void end_document();
  void append_document(std::span<const uint32_t> tokens);
  // Writes the remaining buffer and the attributes, then publishes the file at path():
  // finish() then publish().
  void close();
  // Writes the remaining buffer and the attributes and fsyncs the temporary file; nothing is
  // at path() yet. Files that belong together (a training and a validation split) finish
  // first and publish after, so a failure (a full disk) publishes neither.
  void finish();
  // Renames the finished temporary file onto path().
  void publish();

  const std::string& path() const { return path_; }
  int64_t num_tokens() const { return num_tokens_; }
  int64_t num_documents() const { return num_documents_; }

 private:
  void flush_tokens();
  void flush_offsets();

  std::string path_;
  std::string temp_path_;
  TokenFileAttributes attributes_;
  H5Handle file_;
  H5Handle tokens_;
  H5Handle offsets_;
  std::vector<uint32_t> token_buffer_;
  std::vector<int64_t> offset_buffer_;
  int64_t tokens_written_ = 0;
  int64_t offsets_written_ = 0;
  int64_t num_tokens_ = 0;
  int64_t num_documents_ = 0;
  bool document_open_ = false;
  bool finished_ = false;
  bool closed_ = false;  // published: the temporary file is gone
};

// An open, validated token file. Reads are thread-safe (they hold hdf5_mutex()).
class TokenFile {
 public:
  // Opens `path` and checks the whole layout: datasets, dtypes, attributes and every
  // document offset. Any problem is an infllm::Error naming the file, the key, and the fix.
  explicit TokenFile(std::string path);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  const std::string& path() const { return path_; }
  const TokenFileAttributes& attributes() const { return attributes_; }
  int64_t vocab_size() const { return attributes_.vocab_size; }
  int64_t num_tokens() const { return num_tokens_; }
  int64_t num_documents() const { return num_documents_; }
  int token_bytes() const { return token_bytes_; }  // 2 (u16) or 4 (u32) on disk

  // Tokens [begin, end) into out[0, end - begin). A token >= vocab_size is an error.
  void read(int64_t begin, int64_t end, uint32_t* out) const;
  std::vector<uint32_t> read(int64_t begin, int64_t end) const;
  // All of /doc_offsets (8 bytes per document).
  std::vector<int64_t> doc_offsets() const;

 private:
  void validate_doc_offsets() const;

  std::string path_;
  TokenFileAttributes attributes_;
  H5Handle file_;
  H5Handle tokens_;
  H5Handle offsets_;
  int64_t num_tokens_ = 0;
  int64_t num_documents_ = 0;
  int token_bytes_ = 0;
};

}  // namespace infllm::data
