#include "common/checkpoint_manifest.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/home.h"
#include "common/json_fields.h"

namespace dd2 {
namespace {

void FsyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

std::string CheckpointPath(const std::string& dir, int64_t step) {
  return absl::StrFormat("%s/step-%08d.pt", dir, step);
}

std::string ManifestPathFor(const std::string& checkpoint_path) {
  std::filesystem::path p(checkpoint_path);
  return p.replace_extension(".json").string();
}

namespace {

// Hex sha256 of what `feed` passes to its argument, chunk by chunk.
template <typename Feed>
std::string Sha256Of(Feed feed) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  feed([ctx](const char* data, size_t n) { EVP_DigestUpdate(ctx, data, n); });
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, digest, &len);
  EVP_MD_CTX_free(ctx);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) absl::StrAppendFormat(&hex, "%02x", digest[i]);
  return hex;
}

}  // namespace

absl::StatusOr<std::string> Sha256File(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  return Sha256Of([&in](auto update) {
    std::vector<char> buf(1 << 16);
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      update(buf.data(), static_cast<size_t>(in.gcount()));
    }
  });
}

std::string Sha256Hex(std::string_view data) {
  return Sha256Of([data](auto update) { update(data.data(), data.size()); });
}

absl::StatusOr<CheckpointManifest> CommitCheckpoint(const std::string& path, int64_t step,
                                                    const std::string& attempt_id) {
  FsyncPath(path);
  FsyncPath(std::filesystem::path(path).parent_path().string());
  auto sha = Sha256File(path);
  if (!sha.ok()) return sha.status();
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(path, ": ", ec.message()));
  CheckpointManifest m{step, std::filesystem::absolute(path).string(), *sha, static_cast<int64_t>(bytes), attempt_id};
  nlohmann::json j = {{"step", m.step}, {"file", std::filesystem::path(path).filename().string()},
                      {"sha256", m.sha256}, {"bytes", m.bytes}, {"attempt_id", m.attempt_id}};
  if (auto st = WriteFileAtomic(ManifestPathFor(path), j.dump(2) + "\n"); !st.ok()) return st;
  FsyncPath(std::filesystem::path(path).parent_path().string());
  return m;
}

absl::StatusOr<CheckpointManifest> ReadManifest(const std::string& checkpoint_path) {
  const std::string path = ManifestPathFor(checkpoint_path);
  auto text = ReadFile(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat("no committed checkpoint: ", path, " is missing"));
  auto j = nlohmann::json::parse(*text, nullptr, false);
  CheckpointManifest m;
  m.step = FieldOr(j, "step", int64_t{-1});
  m.sha256 = FieldOr(j, "sha256", std::string());
  const std::string file = FieldOr(j, "file", std::string());
  // The checkpoint lies beside its manifest: a bare file name, nothing that leads elsewhere.
  if (m.step < 0 || m.sha256.empty() || file.empty() || file == "." || file == ".." ||
      file.find('/') != std::string::npos) {
    return absl::DataLossError(absl::StrCat(path, ": not a checkpoint manifest"));
  }
  m.path = (std::filesystem::path(path).parent_path() / file).string();
  m.bytes = FieldOr(j, "bytes", int64_t{0});
  m.attempt_id = FieldOr(j, "attempt_id", std::string());
  return m;
}

std::vector<CheckpointManifest> ListCheckpoints(const std::string& dir) {
  std::vector<CheckpointManifest> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const auto& p = entry.path();
    if (p.extension() != ".json" || p.filename().string().rfind("step-", 0) != 0) continue;
    auto m = ReadManifest(std::filesystem::path(p).replace_extension(".pt").string());
    if (m.ok()) out.push_back(*std::move(m));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step > b.step; });
  return out;
}

absl::Status VerifyCheckpoint(const CheckpointManifest& m) {
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(m.path, ec);
  if (ec) return absl::DataLossError(absl::StrCat(m.path, ": missing (", ec.message(), ")"));
  if (static_cast<int64_t>(bytes) != m.bytes) {
    return absl::DataLossError(absl::StrCat(m.path, ": ", bytes, " bytes, manifest says ", m.bytes));
  }
  auto sha = Sha256File(m.path);
  if (!sha.ok()) return absl::DataLossError(std::string(sha.status().message()));
  if (*sha != m.sha256) {
    return absl::DataLossError(absl::StrCat(m.path, ": sha256 ", *sha, " does not match the manifest's ", m.sha256));
  }
  return absl::OkStatus();
}

absl::Status RemoveCheckpoint(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(ManifestPathFor(path), ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot remove ", ManifestPathFor(path), ": ", ec.message()));
  std::filesystem::remove(path, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot remove ", path, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace dd2
