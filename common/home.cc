#include "common/home.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
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

absl::Status WriteFileAtomic(const std::string& path, const std::string& text) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      ::close(fd);
      return absl::UnavailableError(absl::StrCat("write ", tmp, ": ", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("rename to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

absl::StatusOr<std::string> ReadEndpoint(const std::string& home) {
  auto text = ReadFile(home + "/endpoint");
  if (!text.ok()) {
    return absl::UnavailableError(absl::StrCat("no coordinator endpoint recorded in ", home,
                                               "; start one with `dd2ctl up` or pass --endpoint"));
  }
  return std::string(absl::StripAsciiWhitespace(*text));
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
