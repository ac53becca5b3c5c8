// Located validation of parsed YAML: every error is InvalidArgument with the text
// "FILE:LINE:COLUMN: KEY: what is wrong" (schemas/RUN_YAML.md). Shared by run.yaml and sweep
// parsing. Pure; thread-compatible.
#ifndef DD2_COMMON_YAML_CHECKER_H_
#define DD2_COMMON_YAML_CHECKER_H_

#include <cctype>
#include <cmath>
#include <set>
#include <string>

#include <yaml-cpp/yaml.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace dd2 {

// The 0-based line and column of the first byte of `text` that is not valid UTF-8, or
// line -1 when all of it is (YAML is UTF-8 text; JSON output of it must be too).
inline std::pair<int, int> FirstInvalidUtf8(const std::string& text) {
  int line = 0, column = 0;
  for (size_t i = 0; i < text.size();) {
    const auto b = static_cast<unsigned char>(text[i]);
    size_t n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xe ? 3 : (b >> 3) == 0x1e ? 4 : 0;
    bool ok = n > 0 && i + n <= text.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(text[i + k]) >> 6) == 0x2;
    if (ok && n == 2) ok = b >= 0xc2;  // no overlong forms
    if (ok && n == 3) {
      const auto c = static_cast<unsigned char>(text[i + 1]);
      ok = !(b == 0xe0 && c < 0xa0) && !(b == 0xed && c >= 0xa0);  // overlong, surrogates
    }
    if (ok && n == 4) {
      const auto c = static_cast<unsigned char>(text[i + 1]);
      ok = b <= 0xf4 && !(b == 0xf0 && c < 0x90) && !(b == 0xf4 && c >= 0x90);
    }
    if (!ok) return {line, column};
    if (b == '\n') {
      ++line;
      column = 0;
    } else {
      ++column;
    }
    i += n;
  }
  return {-1, -1};
}

// 1-63 of [A-Za-z0-9_-], starting with a letter or digit.
inline bool ValidName(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  if (!std::isalnum(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  }
  return true;
}

// Builds located errors for one source file.
class YamlChecker {
 public:
  explicit YamlChecker(std::string source) : source_(std::move(source)) {}

  absl::Status Error(const YAML::Mark& mark, const std::string& key, const std::string& what) const {
    int line = mark.line >= 0 ? mark.line + 1 : 1;
    int column = mark.column >= 0 ? mark.column + 1 : 1;
    return absl::InvalidArgumentError(absl::StrCat(source_, ":", line, ":", column, ": ",
                                                   key.empty() ? "" : key + ": ", what));
  }

  // Checks that `node` is a map whose keys are all in `allowed` and unique.
  absl::Status Keys(const YAML::Node& node, const std::string& path,
                    const std::set<std::string>& allowed) const {
    if (!node.IsMap()) return Error(node.Mark(), path, absl::StrCat("expected a mapping, got ", Kind(node)));
    std::set<std::string> seen;
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) return Error(kv.first.Mark(), path, "keys must be plain strings");
      const std::string key = kv.first.Scalar();
      const std::string full = path.empty() ? key : path + "." + key;
      // A key a sweep added has no place in the file; its value (from the sweep block) has.
      const YAML::Mark mark = kv.first.Mark().line >= 0 ? kv.first.Mark() : kv.second.Mark();
      if (!allowed.count(key)) {
        return Error(mark, full,
                     absl::StrCat("unknown key; expected one of: ", absl::StrJoin(allowed, ", ")));
      }
      if (!seen.insert(key).second) return Error(mark, full, "duplicate key");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> String(const YAML::Node& node, const std::string& key) const {
    if (!node.IsScalar()) return Error(node.Mark(), key, absl::StrCat("expected a string, got ", Kind(node)));
    return node.Scalar();
  }

  absl::StatusOr<std::string> Name(const YAML::Node& node, const std::string& key) const {
    DD2_ASSIGN_OR_RETURN(std::string s, String(node, key));
    if (!ValidName(s)) {
      return Error(node.Mark(), key,
                   absl::StrCat("'", s, "' is not a valid name (1-63 letters, digits, '-' or '_', "
                                "starting with a letter or digit)"));
    }
    return s;
  }

  absl::StatusOr<int64_t> Int(const YAML::Node& node, const std::string& key, int64_t min,
                              int64_t max) const {
    DD2_ASSIGN_OR_RETURN(double v, Number(node, key, static_cast<double>(min), static_cast<double>(max)));
    if (v != std::floor(v) || node.Scalar().find_first_of(".eE") != std::string::npos) {
      return Error(node.Mark(), key, absl::StrCat("expected an integer, got '", node.Scalar(), "'"));
    }
    return static_cast<int64_t>(v);
  }

  absl::StatusOr<double> Number(const YAML::Node& node, const std::string& key, double min,
                                double max) const {
    if (!node.IsScalar()) return Error(node.Mark(), key, absl::StrCat("expected a number, got ", Kind(node)));
    const std::string& s = node.Scalar();
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != s.size() || !std::isfinite(v)) {
      return Error(node.Mark(), key, absl::StrCat("expected a number, got '", s, "'"));
    }
    if (v < min || v > max) {
      return Error(node.Mark(), key, absl::StrCat("value ", s, " is out of range [", min, ", ", max, "]"));
    }
    return v;
  }

  absl::StatusOr<bool> Bool(const YAML::Node& node, const std::string& key) const {
    if (node.IsScalar()) {
      const std::string& s = node.Scalar();
      if (s == "true") return true;
      if (s == "false") return false;
    }
    return Error(node.Mark(), key, "expected true or false");
  }

  static std::string Kind(const YAML::Node& node) {
    switch (node.Type()) {
      case YAML::NodeType::Null: return "nothing";
      case YAML::NodeType::Scalar: return absl::StrCat("'", node.Scalar(), "'");
      case YAML::NodeType::Sequence: return "a list";
      case YAML::NodeType::Map: return "a mapping";
      default: return "an undefined value";
    }
  }

 private:
  std::string source_;
};

}  // namespace dd2

#endif  // DD2_COMMON_YAML_CHECKER_H_
