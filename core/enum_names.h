// The names of an enum's values, written once beside the enum, for every parse and print of it
// (recipe keys, command-line flags, logs).
//
// An enum E opts in by declaring, in its own namespace, the table of its names:
//   std::span<const EnumName<E>> enum_names(E);
// (found by argument-dependent lookup). Then to_string, from_string and the list of choices for
// messages all read that one table.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/error.h"

namespace infllm {

template <class E>
struct EnumName {
  E value;
  std::string_view name;
};

template <class E>
concept NamedEnum = requires(E value) {
  { enum_names(value) } -> std::convertible_to<std::span<const EnumName<E>>>;
};

// The name of `value`; an error for a value outside the table (a cast from a bad integer).
template <NamedEnum E>
std::string_view enum_to_string(E value) {
  for (const auto& choice : enum_names(value)) {
    if (choice.value == value) return choice.name;
  }
  fail("enum value ", static_cast<int>(value), " has no name");
}

// The value named `text`, or nullopt when no value has that name.
template <NamedEnum E>
std::optional<E> enum_from_string(std::string_view text) {
  for (const auto& choice : enum_names(E{})) {
    if (choice.name == text) return choice.value;
  }
  return std::nullopt;
}

// "dense, sparse, auto": the names in table order, for messages.
template <NamedEnum E>
std::string enum_choices() {
  std::string list;
  for (const auto& choice : enum_names(E{})) {
    if (!list.empty()) list += ", ";
    list += choice.name;
  }
  return list;
}

// The value named `text`; otherwise an infllm::Error "<what>: 'x' is not one of a, b, c".
template <NamedEnum E>
E from_string(std::string_view text, std::string_view what) {
  if (const std::optional<E> value = enum_from_string<E>(text)) return *value;
  fail(what, ": '", text, "' is not one of ", enum_choices<E>());
}

}  // namespace infllm
