// Reading fields of JSON that came from outside the process (files other processes wrote, a job
// child's progress pipe) without exceptions: nlohmann's value() throws when a field has another
// type, which would take a daemon down. Header-only; thread-compatible.
#ifndef DD2_COMMON_JSON_FIELDS_H_
#define DD2_COMMON_JSON_FIELDS_H_

#include <cstdint>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

namespace dd2 {

// j[key] when `j` is an object holding `key` with a value of type T (an integer for integral T,
// any number for floating T, a string for std::string, a boolean for bool); else `fallback`.
template <typename T>
T FieldOr(const nlohmann::json& j, const char* key, T fallback) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if constexpr (std::is_same_v<T, bool>) {
    return it->is_boolean() ? it->template get<bool>() : fallback;
  } else if constexpr (std::is_integral_v<T>) {
    if (it->is_number_unsigned()) {
      const auto v = it->template get<uint64_t>();
      return std::is_signed_v<T> && v > static_cast<uint64_t>(INT64_MAX) ? fallback : static_cast<T>(v);
    }
    if (it->is_number_integer()) {
      const auto v = it->template get<int64_t>();
      return std::is_unsigned_v<T> && v < 0 ? fallback : static_cast<T>(v);
    }
    return fallback;
  } else if constexpr (std::is_floating_point_v<T>) {
    return it->is_number() ? it->template get<T>() : fallback;
  } else {
    static_assert(std::is_same_v<T, std::string>, "FieldOr: bool, integers, floating point or std::string");
    return it->is_string() ? it->template get<std::string>() : fallback;
  }
}

}  // namespace dd2

#endif  // DD2_COMMON_JSON_FIELDS_H_
