// recipe_to_yaml: the resolved recipe, every key in schema order, as YAML that loads back to an
// equal Recipe.
#include <yaml-cpp/yaml.h>

#include <string>
#include <type_traits>
#include <vector>

#include "core/config_check.h"
#include "core/enum_names.h"
#include "train/recipe.h"
#include "train/recipe_schema.h"

namespace infllm::train {
using namespace recipe_schema;

namespace {

template <class T>
void emit_value(YAML::Emitter& out, const T& field) {
  if constexpr (kIsIntSized<T>) {
    out << field.value;
  } else if constexpr (std::is_same_v<T, bool>) {
    out << field;
  } else if constexpr (std::is_floating_point_v<T>) {
    out << shortest_double(field);
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    out << YAML::Flow << field;
  } else if constexpr (std::is_enum_v<T>) {
    out << std::string(enum_to_string(field));
  } else {
    out << field;
  }
}

}  // namespace

std::string recipe_to_yaml(const Recipe& recipe) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string section;
  visit_fields(recipe, [&](const FieldKey& key, const auto& field) {
    if (section != key.section) {
      if (!section.empty()) out << YAML::EndMap;
      section = key.section;
      out << YAML::Key << section << YAML::Value << YAML::BeginMap;
    }
    out << YAML::Key << key.name << YAML::Value;
    emit_value(out, field);
  });
  out << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace infllm::train
