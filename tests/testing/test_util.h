// Helpers shared by dd2 tests: per-test temporary directories and running a command with its
// stdout captured. Thread-compatible.
#ifndef DD2_TESTS_TESTING_TEST_UTIL_H_
#define DD2_TESTS_TESTING_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace dd2::testing {

// A fresh directory under $TMPDIR (or /tmp), removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A tmpfs of `bytes` mounted on a fresh folder, unmounted by the destructor: a small disk
// that fills up. ok() is false (with why()) where mounting is not permitted (not root).
class SmallDisk {
 public:
  explicit SmallDisk(int64_t bytes);
  ~SmallDisk();
  bool ok() const { return mounted_; }
  const std::string& why() const { return why_; }
  const std::string& path() const { return dir_.path(); }
  // Writes a file of zeros until the disk is full; returns its path.
  std::string Fill() const;

 private:
  TempDir dir_;
  bool mounted_ = false;
  std::string why_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// The files in `dir`, sorted by path.
std::vector<std::string> SortedFiles(const std::string& dir);

// For a malformed-input fixture whose first line is `# expect: TEXT`: checks that `st` is
// InvalidArgument with the text "PATH:LINE:COLUMN: ..." containing TEXT, and returns LINE (0
// when the location is missing).
int ExpectLocatedError(const std::string& path, const absl::Status& st);

// Starts argv (no shell) in the background with its stderr in the file `log`; returns its pid.
int SpawnWithStderrTo(const std::vector<std::string>& argv, const std::string& log);

// Runs argv (no shell) with extra environment `env` ("K=V"), waiting for it to exit.
CommandResult RunCommand(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});

}  // namespace dd2::testing

#endif  // DD2_TESTS_TESTING_TEST_UTIL_H_
