#include "coordinator/retention.h"

#include <algorithm>

namespace dd2 {

std::vector<int64_t> CheckpointsToDelete(const std::vector<RetainedCheckpoint>& committed,
                                         const RetentionPolicy& policy, const std::set<int64_t>& pinned) {
  std::vector<RetainedCheckpoint> by_step = committed;
  std::sort(by_step.begin(), by_step.end(), [](const auto& a, const auto& b) { return a.step > b.step; });
  std::set<int64_t> keep = pinned;
  for (int64_t i = 0; i < std::max<int64_t>(policy.keep_latest, 1) && i < static_cast<int64_t>(by_step.size()); ++i) {
    keep.insert(by_step[i].step);
  }
  std::vector<std::pair<double, int64_t>> scored;  // (score, step); ties go to the newer step
  for (const auto& c : by_step) {
    auto it = c.metrics.find(policy.metric);
    if (it != c.metrics.end()) scored.push_back({policy.maximize ? -it->second : it->second, -c.step});
  }
  std::sort(scored.begin(), scored.end());
  for (int64_t i = 0; i < policy.keep_best && i < static_cast<int64_t>(scored.size()); ++i) keep.insert(-scored[i].second);
  std::vector<int64_t> out;
  for (const auto& c : by_step) {
    if (!keep.count(c.step)) out.push_back(c.step);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace dd2
