#include "tests/testing/test_util.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "common/process.h"

namespace dd2::testing {

std::vector<std::string> SortedFiles(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

int ExpectLocatedError(const std::string& path, const absl::Status& st) {
  std::ifstream in(path);
  std::string first;
  std::getline(in, first);
  EXPECT_EQ(first.rfind("# expect: ", 0), 0u) << path << ": missing expectation line";
  EXPECT_FALSE(st.ok()) << path;
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << path;
  const std::string msg(st.message());
  std::smatch m;
  const bool located = std::regex_search(
      msg, m, std::regex("^" + std::regex_replace(path, std::regex("[.]"), "\\.") + ":([0-9]+):[0-9]+: "));
  EXPECT_TRUE(located) << msg;
  EXPECT_NE(msg.find(first.substr(std::min<size_t>(10, first.size()))), std::string::npos)
      << path << ": " << msg << " lacks '" << first.substr(std::min<size_t>(10, first.size())) << "'";
  return located ? std::stoi(m[1]) : 0;
}

TempDir::TempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/dd2test.XXXXXX";
  char* made = ::mkdtemp(pattern.data());
  path_ = made ? made : pattern;
}

namespace {
int RemoveEntry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }
}  // namespace

// nftw, not std::filesystem::remove_all: python3's libtorch.so exports a broken copy of the
// latter, which a test binary linked against it calls (a null jump; seen with torch 2.11).
TempDir::~TempDir() { ::nftw(path_.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS); }

SmallDisk::SmallDisk(int64_t bytes) {
  const std::string options = "size=" + std::to_string(bytes);
  if (::mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, options.c_str()) == 0) {
    mounted_ = true;
  } else {
    why_ = std::string("cannot mount a tmpfs (root needed): ") + std::strerror(errno);
  }
}

SmallDisk::~SmallDisk() {
  if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
}

std::string SmallDisk::Fill() const {
  const std::string path = dir_.path() + "/filler";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const std::string zeros(4096, '\0');
  while (fd >= 0 && ::write(fd, zeros.data(), zeros.size()) > 0) {
  }
  if (fd >= 0) ::close(fd);
  return path;
}

int SpawnWithStderrTo(const std::vector<std::string>& argv, const std::string& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    FILE* f = std::freopen(log.c_str(), "w", stderr);
    (void)f;
    std::vector<std::string> copy = argv;
    std::vector<char*> args;
    for (auto& a : copy) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

CommandResult RunCommand(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  TempDir dir;
  const std::string out_path = dir.path() + "/out", err_path = dir.path() + "/err";
  pid_t pid = ::fork();
  if (pid == 0) {
    int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(out, 1);
    ::dup2(err, 2);
    for (const auto& kv : env) ::putenv(const_cast<char*>(kv.c_str()));
    ExecOrExit(argv);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream o(out_path), e(err_path);
  std::stringstream so, se;
  so << o.rdbuf();
  se << e.rdbuf();
  r.out = so.str();
  r.err = se.str();
  return r;
}

}  // namespace dd2::testing
