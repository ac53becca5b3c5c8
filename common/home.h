// Layout of a dd2 home directory (default ./.dd2, or $DD2_HOME, or --home):
//   endpoint            the coordinator's ZeroMQ endpoint, one line
//   coordinator.db      SQLite state (WAL)
//   coordinator.pid, coordinator.log
//   logs/<job>/<n>.log  job attempt logs, as streamed by workers
//   workers/<id>/       each local worker's pid, log and scratch space
//   artifacts/<run>/<job>/  job outputs and checkpoints (the storage root; workers' --artifacts)
//   keys/               CURVE key files of a keyed local cluster (common/curve_keys.h)
// Helpers are pure apart from the file system; thread-compatible.
#ifndef DD2_COMMON_HOME_H_
#define DD2_COMMON_HOME_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dd2 {

// `flag` if non-empty, else $DD2_HOME if set, else "./.dd2"; made absolute.
std::string ResolveHome(const std::string& flag);

// A file written in pieces to `<path>.tmp.<pid>`, then fsynced and renamed over `path` by
// Commit, so a reader sees the old file or the whole new one. The first write error (a full
// disk, say) is kept and returned by Commit, naming the file; the temp file is removed unless
// committed. Thread-compatible.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  void Write(const void* data, size_t n);  // does nothing after an error
  absl::Status Commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  int errno_ = 0;
  bool committed_ = false;
};

// Writes `text` to `path` with an AtomicFileWriter.
absl::Status WriteFileAtomic(const std::string& path, const std::string& text);

// Whole file; NotFound when it does not exist.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// The endpoint recorded in `home`, trimmed. NotFound with a hint when there is none.
absl::StatusOr<std::string> ReadEndpoint(const std::string& home);

// The coordinator's HTTP URL recorded in `home` (<home>/http: "http://ADDR:PORT/"), and its
// ADDR:PORT. Unavailable with a hint when there is none.
absl::StatusOr<std::string> ReadHttpUrl(const std::string& home);
absl::StatusOr<std::string> ReadHttpAddress(const std::string& home);

// OK when `path` is absolute, has no ".." component, and resolves (symlinks followed, as far as
// they exist) to a location strictly inside `dir` (resolved the same way); PermissionDenied
// naming both otherwise. For paths that came in a message, before anything reads or deletes
// them.
absl::Status CheckInsideDir(const std::string& path, const std::string& dir);

}  // namespace dd2

#endif  // DD2_COMMON_HOME_H_
