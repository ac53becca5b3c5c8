// The checkpoint commit protocol's on-disk half (DESIGN.md, Checkpoints). A checkpoint of a job
// is <dir>/step-<NNNNNNNN>.pt plus its manifest <dir>/step-<NNNNNNNN>.json, written last, with
// the step, the file's size and sha256, and who wrote it. A checkpoint without a manifest, or
// whose file does not match its manifest, is never used. Pure apart from the file system;
// thread-compatible.
#ifndef DD2_COMMON_CHECKPOINT_MANIFEST_H_
#define DD2_COMMON_CHECKPOINT_MANIFEST_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dd2 {

struct CheckpointManifest {
  int64_t step = 0;
  std::string path;        // absolute path of the .pt file
  std::string sha256;      // lower-case hex
  int64_t bytes = 0;
  std::string attempt_id;
};

// <dir>/step-<8 digits>.pt and the manifest beside it.
std::string CheckpointPath(const std::string& dir, int64_t step);
std::string ManifestPathFor(const std::string& checkpoint_path);

// Hex sha256 of a file's bytes; NotFound when it does not exist.
absl::StatusOr<std::string> Sha256File(const std::string& path);
// Hex sha256 of `data`.
std::string Sha256Hex(std::string_view data);

// fsyncs a written file and its directory, hashes it and writes the manifest atomically (the
// commit point). Returns what it wrote.
absl::StatusOr<CheckpointManifest> CommitCheckpoint(const std::string& path, int64_t step,
                                                    const std::string& attempt_id);

// The manifest of the checkpoint at `checkpoint_path` (unverified); NotFound when there is
// none, DataLoss when it does not parse.
absl::StatusOr<CheckpointManifest> ReadManifest(const std::string& checkpoint_path);

// Every manifest in `dir` that parses, newest step first (unverified).
std::vector<CheckpointManifest> ListCheckpoints(const std::string& dir);

// OK when the file exists with the manifest's size and sha256; DataLoss naming what differs.
absl::Status VerifyCheckpoint(const CheckpointManifest& manifest);

// Removes the manifest first (so the checkpoint stops being committed), then the file.
absl::Status RemoveCheckpoint(const std::string& checkpoint_path);

}  // namespace dd2

#endif  // DD2_COMMON_CHECKPOINT_MANIFEST_H_
