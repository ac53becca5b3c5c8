#include "common/home.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"

namespace dd2 {

std::string ResolveHome(const std::string& flag) {
  std::string home = flag;
  if (home.empty()) {
    const char* env = std::getenv("DD2_HOME");
    home = env && *env ? env : ".dd2";
  }
  return std::filesystem::absolute(home).lexically_normal().string();
}

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)), tmp_(absl::StrCat(path_, ".tmp.", ::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) errno_ = errno;
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::Write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (errno_ == 0 && n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      errno_ = w < 0 ? errno : ENOSPC;
      break;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

absl::Status AtomicFileWriter::Commit() {
  if (errno_ == 0 && ::fsync(fd_) != 0) errno_ = errno;
  if (fd_ >= 0 && ::close(fd_) != 0 && errno_ == 0) errno_ = errno;
  fd_ = -1;
  if (errno_ != 0) {
    const absl::Status st = absl::Status(errno_ == ENOSPC || errno_ == EDQUOT || errno_ == EFBIG
                                             ? absl::StatusCode::kResourceExhausted
                                             : absl::StatusCode::kUnavailable,
                                         absl::StrCat("cannot write ", path_, ": ", std::strerror(errno_)));
    ::unlink(tmp_.c_str());
    return st;
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp_.c_str());
    return absl::UnavailableError(absl::StrCat("cannot rename ", tmp_, " to ", path_, ": ", std::strerror(e)));
  }
  committed_ = true;
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path, const std::string& text) {
  AtomicFileWriter w(path);
  w.Write(text.data(), text.size());
  return w.Commit();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

namespace {

// <home>/<file>, trimmed; Unavailable with `missing` when there is none.
absl::StatusOr<std::string> ReadRecorded(const std::string& home, const std::string& file, const std::string& missing) {
  auto text = ReadFile(home + "/" + file);
  if (!text.ok()) return absl::UnavailableError(absl::StrCat(missing, " recorded in ", home, "; ", "start one with `dd2ctl up`"));
  return std::string(absl::StripAsciiWhitespace(*text));
}

}  // namespace

absl::StatusOr<std::string> ReadEndpoint(const std::string& home) {
  auto ep = ReadRecorded(home, "endpoint", "no coordinator endpoint");
  if (!ep.ok()) return absl::UnavailableError(absl::StrCat(ep.status().message(), " or pass --endpoint"));
  return ep;
}

absl::StatusOr<std::string> ReadHttpUrl(const std::string& home) {
  return ReadRecorded(home, "http", "no HTTP endpoint (a coordinator serves one unless --http \"\")");
}

absl::StatusOr<std::string> ReadHttpAddress(const std::string& home) {
  auto url = ReadHttpUrl(home);
  if (!url.ok()) return url.status();
  absl::string_view v = *url;
  if (!absl::ConsumePrefix(&v, "http://")) return absl::InvalidArgumentError(absl::StrCat(home, "/http: not an http:// URL"));
  absl::ConsumeSuffix(&v, "/");
  return std::string(v);
}

absl::Status CheckInsideDir(const std::string& path, const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  auto refuse = [&](const std::string& why) {
    return absl::PermissionDeniedError(absl::StrCat("path ", path, " ", why, " (allowed: inside ", dir, ")"));
  };
  if (path.empty() || !p.is_absolute()) return refuse("is not absolute");
  if (path.find('\0') != std::string::npos) return refuse("contains a NUL byte");
  for (const auto& part : p) {
    if (part == "..") return refuse("has a '..' component");
  }
  std::error_code ec;
  const fs::path resolved = fs::weakly_canonical(p, ec);
  if (ec) return refuse(absl::StrCat("cannot be resolved: ", ec.message()));
  const fs::path root = fs::weakly_canonical(fs::path(dir), ec);
  if (ec) return refuse(absl::StrCat("cannot be checked, the folder cannot be resolved: ", ec.message()));
  const std::string r = resolved.string(), d = root.string();
  if (r.size() <= d.size() + 1 || r.compare(0, d.size(), d) != 0 || r[d.size()] != '/') {
    return refuse(r == path ? "lies outside it" : absl::StrCat("resolves to ", r, ", outside it"));
  }
  return absl::OkStatus();
}

}  // namespace dd2
