// Element types. f64 exists for gradcheck on the CPU; u16/u32 hold token data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/bf16.h"
#include "core/error.h"

namespace infllm {

enum class DType : uint8_t { f32, bf16, f64, i32, i64, u16, u32 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
bool is_floating(DType dtype);

// Maps a C++ element type to its DType: dtype_of<float>() == DType::f32.
template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
template <>
constexpr DType dtype_of<bf16>() {
  return DType::bf16;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::f64;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::i32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::i64;
}
template <>
constexpr DType dtype_of<uint16_t>() {
  return DType::u16;
}
template <>
constexpr DType dtype_of<uint32_t>() {
  return DType::u32;
}

// Calls fn.template operator()<T>() with T the C++ type of dtype.
template <class Fn>
decltype(auto) visit_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::f32:
      return fn.template operator()<float>();
    case DType::bf16:
      return fn.template operator()<bf16>();
    case DType::f64:
      return fn.template operator()<double>();
    case DType::i32:
      return fn.template operator()<int32_t>();
    case DType::i64:
      return fn.template operator()<int64_t>();
    case DType::u16:
      return fn.template operator()<uint16_t>();
    case DType::u32:
      return fn.template operator()<uint32_t>();
  }
  return fn.template operator()<float>();
}

// For CPU reference kernels templated on the float type: calls fn.template operator()<T>()
// with T = float or double, and `fail`s (core/error.h) on any other dtype.
template <class Fn>
decltype(auto) visit_f32_f64(DType dtype, const char* op, Fn&& fn) {
  INFLLM_CHECK(dtype == DType::f32 || dtype == DType::f64, op,
               ": the CPU computes in f32 or f64, got ", dtype_name(dtype));
  if (dtype == DType::f64) return fn.template operator()<double>();
  return fn.template operator()<float>();
}

}  // namespace infllm
