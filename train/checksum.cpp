#include "train/checksum.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>

namespace infllm::train {
namespace {

static_assert(std::endian::native == std::endian::little,
              "XXH64 reads lanes as little-endian words; a big-endian host needs byte swaps");

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ULL;

uint64_t read64(const unsigned char* p) {
  uint64_t value;
  std::memcpy(&value, p, 8);
  return value;
}

uint32_t read32(const unsigned char* p) {
  uint32_t value;
  std::memcpy(&value, p, 4);
  return value;
}

uint64_t lane_round(uint64_t lane, uint64_t input) {
  lane += input * kPrime2;
  lane = std::rotl(lane, 31);
  return lane * kPrime1;
}

uint64_t merge_round(uint64_t hash, uint64_t lane) {
  hash ^= lane_round(0, lane);
  return hash * kPrime1 + kPrime4;
}

}  // namespace

Xxh64::Xxh64() : lanes_{kPrime1 + kPrime2, kPrime2, 0, uint64_t(0) - kPrime1} {}

void Xxh64::update(const void* data, size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  total_ += size;
  if (buffered_ > 0) {  // complete the pending 32-byte stripe first
    const size_t take = std::min(size, sizeof(buffer_) - buffered_);
    std::memcpy(buffer_ + buffered_, p, take);
    buffered_ += take, p += take, size -= take;
    if (buffered_ < sizeof(buffer_)) return;
    for (int i = 0; i < 4; ++i) lanes_[i] = lane_round(lanes_[i], read64(buffer_ + 8 * i));
    buffered_ = 0;
  }
  for (; size >= 32; p += 32, size -= 32) {
    lanes_[0] = lane_round(lanes_[0], read64(p));
    lanes_[1] = lane_round(lanes_[1], read64(p + 8));
    lanes_[2] = lane_round(lanes_[2], read64(p + 16));
    lanes_[3] = lane_round(lanes_[3], read64(p + 24));
  }
  std::memcpy(buffer_, p, size);
  buffered_ = size;
}

void Xxh64::update_u64(uint64_t value) {
  unsigned char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(value >> (8 * i));
  update(bytes, 8);
}

void Xxh64::update_field(std::string_view text) {
  update_u64(text.size());
  update(text);
}

uint64_t Xxh64::digest() const {
  uint64_t hash;
  if (total_ >= 32) {
    hash = std::rotl(lanes_[0], 1) + std::rotl(lanes_[1], 7) + std::rotl(lanes_[2], 12) +
           std::rotl(lanes_[3], 18);
    for (uint64_t lane : lanes_) hash = merge_round(hash, lane);
  } else {
    hash = lanes_[2] + kPrime5;  // lanes_[2] is the seed until a stripe was consumed
  }
  hash += total_;
  const unsigned char* p = buffer_;
  size_t left = buffered_;
  for (; left >= 8; p += 8, left -= 8) {
    hash ^= lane_round(0, read64(p));
    hash = std::rotl(hash, 27) * kPrime1 + kPrime4;
  }
  if (left >= 4) {
    hash ^= uint64_t(read32(p)) * kPrime1;
    hash = std::rotl(hash, 23) * kPrime2 + kPrime3;
    p += 4, left -= 4;
  }
  for (; left > 0; ++p, --left) {
    hash ^= *p * kPrime5;
    hash = std::rotl(hash, 11) * kPrime1;
  }
  hash ^= hash >> 33;
  hash *= kPrime2;
  hash ^= hash >> 29;
  hash *= kPrime3;
  hash ^= hash >> 32;
  return hash;
}

uint64_t xxh64(const void* data, size_t size) {
  Xxh64 hash;
  hash.update(data, size);
  return hash.digest();
}

std::string checksum_text(uint64_t digest) {
  char text[32];
  std::snprintf(text, sizeof(text), "xxh64:%016llx", static_cast<unsigned long long>(digest));
  return text;
}

}  // namespace infllm::train
