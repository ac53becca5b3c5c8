#include "common/job_outputs.h"

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/checkpoint_manifest.h"
#include "common/home.h"
#include "common/json_fields.h"
#include "common/status_macros.h"

namespace dd2 {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kManifestName[] = "outputs.json";

absl::StatusOr<OutputsManifest> WriteOutputsManifest(const std::string& out_dir) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  std::map<std::string, Json> files;  // sorted by relative path: the manifest is reproducible
  for (auto it = fs::recursive_directory_iterator(out_dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    const fs::path rel = fs::relative(it->path(), out_dir);
    if (it->is_directory() && rel == "checkpoints") {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file() || rel == kManifestName || rel.filename().string().find(".tmp") != std::string::npos) {
      continue;
    }
    DD2_ASSIGN_OR_RETURN(std::string sha, Sha256File(it->path().string()));
    files[rel.string()] = {{"sha256", sha}, {"bytes", static_cast<int64_t>(it->file_size())}};
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", out_dir, ": ", ec.message()));
  Json doc = {{"files", Json::object()}};
  for (auto& [rel, f] : files) doc["files"][rel] = f;
  const std::string text = doc.dump(1);
  const std::string path = (fs::path(out_dir) / kManifestName).string();
  DD2_RETURN_IF_ERROR(WriteFileAtomic(path, text));
  return OutputsManifest{path, Sha256Hex(text)};
}

absl::Status VerifyOutputs(const std::string& path, const std::string& sha256) {
  DD2_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  if (Sha256Hex(text) != sha256) {
    return absl::DataLossError(absl::StrCat(path, ": sha256 differs from the one recorded when the job succeeded"));
  }
  Json doc = Json::parse(text, nullptr, false);
  if (!doc.is_object() || !doc.contains("files") || !doc["files"].is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": not an outputs manifest"));
  }
  const fs::path dir = fs::path(path).parent_path();
  for (auto& [rel, f] : doc["files"].items()) {
    const std::string file = (dir / rel).string();
    // Only files in the manifest's own folder are read.
    if (absl::Status inside = CheckInsideDir(file, dir.string()); !inside.ok()) {
      return absl::DataLossError(absl::StrCat(path, ": ", inside.message()));
    }
    std::error_code ec;
    const auto bytes = fs::file_size(file, ec);
    if (ec) return absl::NotFoundError(absl::StrCat(file, ": missing"));
    const int64_t want = FieldOr(f, "bytes", int64_t{-1});
    if (static_cast<int64_t>(bytes) != want) {
      return absl::DataLossError(absl::StrCat(file, ": ", bytes, " bytes, manifest says ", want));
    }
    DD2_ASSIGN_OR_RETURN(std::string sha, Sha256File(file));
    if (sha != FieldOr(f, "sha256", std::string())) return absl::DataLossError(absl::StrCat(file, ": sha256 mismatch"));
  }
  return absl::OkStatus();
}

}  // namespace dd2
