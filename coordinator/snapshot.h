// CoordinatorSnapshot: an immutable copy of the coordinator's state and counters, made by the
// loop thread (CoordinatorService::MakeSnapshot) and read by the HTTP thread, which never
// touches the loop's own state. SnapshotBox hands them across. Thread-safe.
// SyncViewState and SyncViewStateChanged bring an older copy up to date by changing only what
// differs, so the loop thread can recycle a snapshot nobody reads any more instead of copying
// every record.
#ifndef DD2_COORDINATOR_SNAPSHOT_H_
#define DD2_COORDINATOR_SNAPSHOT_H_

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <map>
#include <mutex>
#include <set>

#include "coordinator/loop_stats.h"
#include "coordinator/state.h"
#include "coordinator/views.h"

namespace dd2 {

struct CoordinatorSnapshot {
  CoordinatorState state;  // what the views read; the loop's private indexes and job specs are left out
  CoordinatorInfo info;
  LoopStats stats;
  int64_t now_ms = 0;
  std::string artifacts_root;  // job folders are <root>/<run>/<job>
};

// Makes `view`'s fields that the views read (views.h, http_api.h) equal to `loop`'s; the loop's
// own indexes and the job specs are left out. Costs a comparison per record plus a copy of each
// record that changed, added or removed, instead of a copy of every record.
void SyncViewState(const CoordinatorState& loop, CoordinatorState* view);

// Keys of the run, job, attempt and worker records folded into the loop's state since a
// snapshot was made.
struct ChangedRecords {
  std::set<std::string> runs, jobs, attempts, workers;
};

// As SyncViewState, for a `view` that was equal to the loop's state when `changed` was empty:
// runs, jobs, attempts and workers, and the indexes over them (ready jobs, active attempts,
// attempts by job), are brought up to date only at the keys in `changed`, the smaller maps in
// full. Costs a lookup per changed key instead of a comparison per record.
void SyncViewStateChanged(const CoordinatorState& loop, const ChangedRecords& changed, CoordinatorState* view);

// Makes `dst` equal to `src` in one ordered walk of both: equal entries (by `eq`) are kept,
// changed values assigned, missing keys inserted, extra keys erased.
template <typename K, typename V, typename Eq = std::equal_to<V>>
void SyncMap(const std::map<K, V>& src, std::map<K, V>* dst, Eq eq = Eq()) {
  auto d = dst->begin();
  for (const auto& [key, value] : src) {
    while (d != dst->end() && d->first < key) d = dst->erase(d);
    if (d != dst->end() && !(key < d->first)) {
      if (!eq(d->second, value)) d->second = value;
      ++d;
    } else {
      dst->emplace_hint(d, key, value);
    }
  }
  dst->erase(d, dst->end());
}

template <typename K>
void SyncSet(const std::set<K>& src, std::set<K>* dst) {
  auto d = dst->begin();
  for (const K& key : src) {
    while (d != dst->end() && *d < key) d = dst->erase(d);
    if (d != dst->end() && !(key < *d)) {
      ++d;
    } else {
      dst->emplace_hint(d, key);
    }
  }
  dst->erase(d, dst->end());
}

// Published on demand: the HTTP thread asks for a fresh snapshot (GetFresh) and the loop makes
// one only when asked (TakeRequest), so a coordinator nobody reads pays nothing for it.
class SnapshotBox {
 public:
  SnapshotBox() : wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~SnapshotBox() { if (wake_fd_ >= 0) ::close(wake_fd_); }
  SnapshotBox(const SnapshotBox&) = delete;
  SnapshotBox& operator=(const SnapshotBox&) = delete;
  // Readable while a request is pending: the loop polls it with its sockets, so a request wakes it.
  int wake_fd() const { return wake_fd_; }
  void Publish(std::shared_ptr<const CoordinatorSnapshot> s) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      latest_ = std::move(s);
      published_ = std::chrono::steady_clock::now();
      ++generation_;
    }
    cv_.notify_all();
  }
  // True once per request made since the last call (the loop polls it).
  bool TakeRequest() {
    uint64_t drained;
    if (wake_fd_ >= 0) [[maybe_unused]] auto n = ::read(wake_fd_, &drained, sizeof drained);
    return requested_.exchange(false);
  }
  // The latest snapshot if it is at most `max_age` old; otherwise asks the loop for a new one
  // and waits up to `wait` for it (then returns the latest, possibly stale). Null before the first.
  std::shared_ptr<const CoordinatorSnapshot> GetFresh(std::chrono::milliseconds max_age, std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mu_);
    if (latest_ && std::chrono::steady_clock::now() - published_ <= max_age) return latest_;
    const uint64_t seen = generation_;
    requested_ = true;
    const uint64_t one = 1;
    if (wake_fd_ >= 0) [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
    cv_.wait_for(lock, wait, [&] { return generation_ != seen; });
    return latest_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<const CoordinatorSnapshot> latest_;
  std::chrono::steady_clock::time_point published_;
  uint64_t generation_ = 0;
  std::atomic<bool> requested_{false};
  int wake_fd_;
};

}  // namespace dd2

#endif  // DD2_COORDINATOR_SNAPSHOT_H_
