// A succeeded job's outputs, for reuse by identical jobs (DESIGN.md, Jobs). The job child writes
// <out>/outputs.json after the job returns 0: every file under the job's artifact folder except
// checkpoints/ (retention thins those) and the manifest itself, with its size and sha256. The
// coordinator records the manifest's own sha256; before reusing the job it verifies the manifest
// against that and every file against the manifest. Pure apart from the file system;
// thread-compatible.
#ifndef DD2_COMMON_JOB_OUTPUTS_H_
#define DD2_COMMON_JOB_OUTPUTS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dd2 {

struct OutputsManifest {
  std::string path;    // <out_dir>/outputs.json
  std::string sha256;  // of that file
};

// Hashes the files under `out_dir` (which may not exist: no outputs) and writes the manifest
// atomically.
absl::StatusOr<OutputsManifest> WriteOutputsManifest(const std::string& out_dir);

// OK when the manifest at `path` has sha256 `sha256` and every file it lists is there with its
// size and checksum; DataLoss (or NotFound) naming the first thing that differs.
absl::Status VerifyOutputs(const std::string& path, const std::string& sha256);

}  // namespace dd2

#endif  // DD2_COMMON_JOB_OUTPUTS_H_
