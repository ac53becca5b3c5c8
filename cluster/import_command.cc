#include "cluster/import_command.h"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/run_spec.h"

namespace dd2 {

absl::StatusOr<proto::RunSpec> LlamaGenImportRun(const LlamaGenImport& o) {
  using Json = nlohmann::json;
  auto absolute = [](const std::string& path) {
    return path.empty() ? path : std::filesystem::absolute(path).lexically_normal().string();
  };
  Json teacher = {{"file", absolute(o.gpt)}, {"preset", o.preset}, {"heads", o.heads}, {"tokens", o.tokens}};
  Json jobs = Json::array({
      {{"name", "tokenizer"}, {"type", "import_tokenizer"}, {"params", {{"file", absolute(o.vq)}}}},
      {{"name", "teacher-import"}, {"type", "import_teacher"}, {"after", {"tokenizer"}}, {"params", teacher}},
  });
  if (o.eval_samples > 0) {
    jobs.push_back({{"name", "eval-teacher-import"},
                    {"type", "eval"},
                    {"after", {"teacher-import"}},
                    {"params",
                     {{"sampler", "teacher"},
                      {"teacher", "teacher-import"},
                      {"samples", o.eval_samples},
                      {"batch", std::min<int64_t>(o.eval_samples, 250)}}}});
  }
  // JSON is YAML: the run goes through the same validation as a file.
  return ParseRunSpec(Json{{"name", o.name}, {"jobs", jobs}}.dump(), "dd2ctl import llamagen");
}

}  // namespace dd2
