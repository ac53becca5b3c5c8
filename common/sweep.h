// Sweeps (schemas/RUN_YAML.md, "Sweeps"): a run.yaml with a `sweep:` block expands into points,
// each a run of its own whose swept keys take one combination of values. grid (cartesian
// product), zip (paired lists), random (n draws from a seeded space) and seeds (replicates) all
// combine; every point is validated exactly like a single run, and an error names the
// FILE:LINE:COLUMN of the offending sweep value and the point's values. Pure; thread-compatible.
#ifndef DD2_COMMON_SWEEP_H_
#define DD2_COMMON_SWEEP_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "schemas/dd2.pb.h"

namespace dd2 {

// The default bound on a sweep's points; `sweep.max_points` raises it.
inline constexpr int64_t kDefaultMaxSweepPoints = 1000;

// Expands run.yaml text that has a `sweep:` block. Points come in a fixed order: grid keys in
// the file's order (the first varies slowest), then zip rows, then random draws, then seeds.
absl::StatusOr<proto::SweepSpec> ParseSweep(const std::string& yaml, const std::string& source);

// What a run.yaml file holds: a single run, or a sweep.
struct Submission {
  std::optional<proto::RunSpec> run;
  std::optional<proto::SweepSpec> sweep;
};
absl::StatusOr<Submission> LoadSubmission(const std::string& path);

// The identity of a point: sha256 of its resolved jobs (the run's name, source, priority and
// no_reuse left out), so the same configuration is the same point in any file.
std::string PointIdentity(const proto::RunSpec& spec);

}  // namespace dd2

#endif  // DD2_COMMON_SWEEP_H_
