#include "coordinator/snapshot.h"

#include <google/protobuf/util/message_differencer.h>

namespace dd2 {
namespace {

// Makes `dst`'s entry at `key` what `src` has there (or nothing).
template <typename V>
void SyncKey(const std::map<std::string, V>& src, const std::string& key, std::map<std::string, V>* dst) {
  auto from = src.find(key);
  if (from == src.end()) {
    dst->erase(key);
    return;
  }
  auto [to, inserted] = dst->try_emplace(key, from->second);
  if (!inserted && !(to->second == from->second)) to->second = from->second;
}

void SyncMember(const std::set<std::string>& src, const std::string& key, std::set<std::string>* dst) {
  if (src.count(key)) {
    dst->insert(key);
  } else {
    dst->erase(key);
  }
}

// The maps SyncViewStateChanged compares in full: small, or changed outside the folded records.
void SyncSmallMaps(const CoordinatorState& loop, CoordinatorState* view) {
  SyncMap(loop.live, &view->live);
  SyncMap(loop.jobs_by_run, &view->jobs_by_run);
  SyncMap(loop.latest_metrics, &view->latest_metrics);
  SyncMap(loop.checkpoints, &view->checkpoints);
  SyncMap(loop.sweeps, &view->sweeps);
  SyncMap(loop.sweep_specs, &view->sweep_specs, [](const proto::SweepSpec& a, const proto::SweepSpec& b) {
    return google::protobuf::util::MessageDifferencer::Equals(a, b);
  });
  SyncMap(loop.points, &view->points);
  SyncMap(loop.sweep_of_run, &view->sweep_of_run);
  SyncMap(loop.decisions, &view->decisions);
  SyncMap(loop.allocations, &view->allocations);
}

}  // namespace

void SyncViewState(const CoordinatorState& loop, CoordinatorState* view) {
  SyncSmallMaps(loop, view);
  SyncMap(loop.runs, &view->runs);
  SyncMap(loop.jobs, &view->jobs);
  SyncMap(loop.attempts, &view->attempts);
  SyncMap(loop.workers, &view->workers);
  SyncMap(loop.attempts_by_job, &view->attempts_by_job);
  SyncSet(loop.ready, &view->ready);
  SyncSet(loop.active_attempts, &view->active_attempts);
}

void SyncViewStateChanged(const CoordinatorState& loop, const ChangedRecords& changed, CoordinatorState* view) {
  SyncSmallMaps(loop, view);
  for (const auto& id : changed.runs) SyncKey(loop.runs, id, &view->runs);
  for (const auto& id : changed.jobs) {
    SyncKey(loop.jobs, id, &view->jobs);
    SyncMember(loop.ready, id, &view->ready);
  }
  for (const auto& id : changed.attempts) {
    SyncKey(loop.attempts, id, &view->attempts);
    SyncMember(loop.active_attempts, id, &view->active_attempts);
    if (auto a = loop.attempts.find(id); a != loop.attempts.end()) {
      SyncKey(loop.attempts_by_job, a->second.job_id, &view->attempts_by_job);
    }
  }
  for (const auto& id : changed.workers) SyncKey(loop.workers, id, &view->workers);
}

}  // namespace dd2
