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

}  // namespace dd2
