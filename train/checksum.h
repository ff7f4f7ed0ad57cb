// XXH64 (Yann Collet's xxHash, 64-bit, seed 0), the checksum of every checkpoint tensor and of a
// checkpoint's metadata: fast enough to verify a checkpoint at the speed it is read, and any
// flipped bit changes it. The value equals the reference implementation's (xxhsum -H1), so a
// stored checksum can be checked outside infllm.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace infllm::train {

class Xxh64 {
 public:
  Xxh64();
  // Feeds `size` more bytes; the digest of several updates equals that of their concatenation.
  void update(const void* data, size_t size);
  void update(std::string_view text) { update(text.data(), text.size()); }
  // Little-endian 8 bytes, so a digest of mixed fields does not depend on the host.
  void update_u64(uint64_t value);
  // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
  void update_field(std::string_view text);
  // The digest of everything fed so far (the state stays usable for more updates).
  uint64_t digest() const;

 private:
  uint64_t lanes_[4];
  unsigned char buffer_[32];
  size_t buffered_ = 0;
  uint64_t total_ = 0;
};

// XXH64 of one buffer.
uint64_t xxh64(const void* data, size_t size);

// "xxh64:" and 16 lowercase hex digits: how a checkpoint stores a checksum (a string attribute,
// readable in h5py and h5dump, naming its algorithm).
std::string checksum_text(uint64_t digest);

}  // namespace infllm::train
