// LoopStats: what the coordinator's loop measures about itself for /metrics: SQLite commit,
// scheduling-pass and snapshot latency histograms and committed events by kind. Updated by the loop thread
// only; copied into HTTP snapshots. Pure data. Thread-compatible.
#ifndef DD2_COORDINATOR_LOOP_STATS_H_
#define DD2_COORDINATOR_LOOP_STATS_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>

namespace dd2 {

// A Prometheus-style histogram of seconds with fixed upper bounds (the last is +Inf).
struct Histogram {
  static constexpr std::array<double, 12> kBounds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                     0.01,   0.025,   0.05,   0.1,   0.25,   1.0};
  std::array<int64_t, kBounds.size() + 1> counts{};  // per bucket, not cumulative; last: above 1 s
  int64_t count = 0;
  double sum = 0;

  void Observe(double seconds) {
    size_t i = 0;
    while (i < kBounds.size() && seconds > kBounds[i]) ++i;
    ++counts[i];
    ++count;
    sum += seconds;
  }
};

struct LoopStats {
  Histogram commit_seconds;    // one SQLite transaction (CoordinatorService::Commit)
  Histogram schedule_seconds;  // one scheduling pass over the ready jobs
  Histogram snapshot_seconds;  // one copy of the state for the HTTP thread
  std::map<std::string, int64_t> events;  // committed events by kind since this process started
};

}  // namespace dd2

#endif  // DD2_COORDINATOR_LOOP_STATS_H_
