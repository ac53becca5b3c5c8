// Successive halving over a sweep's points (issue "Sweeps"): at each rung, once every point still
// in the race has its metric at that step (or will never have it: its run ended), the best
// `keep` fraction (at least one) goes on and the rest are stopped. Rungs are decided in order;
// a decided rung is never revisited. Points added after a rung was decided (a sweep extended
// later) are not judged at that rung. Ties go to the lower point number. Pure: the same inputs
// give the same decisions; thread-safe.
#ifndef DD2_COORDINATOR_HALVING_H_
#define DD2_COORDINATOR_HALVING_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace dd2 {

struct HalvingPolicy {
  std::vector<int64_t> rungs;  // ascending steps
  double keep = 0.5;           // (0, 1)
  bool maximize = false;
};

struct HalvingPoint {
  std::string identity;
  int64_t number = 0;                 // order the points were added in
  std::map<int64_t, double> values;   // step -> metric, where known
  bool finished = false;              // its run ended: no more values will come
};

struct HalvingOutcome {
  int64_t rung = 0;
  std::string identity;
  std::optional<double> value;  // none: the point never reached the rung with the metric
  bool kept = false;
  bool operator==(const HalvingOutcome&) const = default;
};

// Decisions for the rungs that can be decided now and are not in `decided` (rung -> the
// outcomes already recorded at it), in rung order.
std::vector<HalvingOutcome> DecideRungs(const HalvingPolicy& policy, const std::vector<HalvingPoint>& points,
                                        const std::map<int64_t, std::vector<HalvingOutcome>>& decided);

}  // namespace dd2

#endif  // DD2_COORDINATOR_HALVING_H_
