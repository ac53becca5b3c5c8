// Checkpoint retention (DESIGN.md, Checkpoints): which committed checkpoints of one job a policy
// lets go. Keeps the newest keep_latest, the best keep_best by the policy's metric (those that
// report it), and every pinned step (an attempt or eval still needs it). Pure; thread-safe.
#ifndef DD2_COORDINATOR_RETENTION_H_
#define DD2_COORDINATOR_RETENTION_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace dd2 {

struct RetentionPolicy {
  int64_t keep_latest = 1;
  int64_t keep_best = 0;
  std::string metric;
  bool maximize = false;
};

struct RetainedCheckpoint {
  int64_t step = 0;
  std::map<std::string, double> metrics;
};

// Steps to delete, ascending. `committed` may be in any order.
std::vector<int64_t> CheckpointsToDelete(const std::vector<RetainedCheckpoint>& committed,
                                         const RetentionPolicy& policy, const std::set<int64_t>& pinned);

}  // namespace dd2

#endif  // DD2_COORDINATOR_RETENTION_H_
