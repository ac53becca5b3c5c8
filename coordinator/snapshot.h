// CoordinatorSnapshot: an immutable copy of the coordinator's state and counters, made by the
// loop thread (CoordinatorService::MakeSnapshot) and read by the HTTP thread, which never
// touches the loop's own state. SnapshotBox hands the latest one across. Thread-safe.
#ifndef DD2_COORDINATOR_SNAPSHOT_H_
#define DD2_COORDINATOR_SNAPSHOT_H_

#include <memory>
#include <mutex>

#include "coordinator/loop_stats.h"
#include "coordinator/state.h"
#include "coordinator/views.h"

namespace dd2 {

struct CoordinatorSnapshot {
  CoordinatorState state;
  CoordinatorInfo info;
  LoopStats stats;
  int64_t now_ms = 0;
  std::string artifacts_root;  // job folders are <root>/<run>/<job>
};

class SnapshotBox {
 public:
  void Publish(std::shared_ptr<const CoordinatorSnapshot> s) {
    std::lock_guard<std::mutex> lock(mu_);
    latest_ = std::move(s);
  }
  // The latest published snapshot; null before the first.
  std::shared_ptr<const CoordinatorSnapshot> Get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return latest_;
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const CoordinatorSnapshot> latest_;
};

}  // namespace dd2

#endif  // DD2_COORDINATOR_SNAPSHOT_H_
