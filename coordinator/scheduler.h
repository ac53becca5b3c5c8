// Placement policy: a pure function from free worker slots and the ready queue to placements.
// Order: run priority, then job priority (both descending), then submission order (FIFO), then
// the job's position in its run. A job that needs N workers gets N distinct matching workers or
// nothing (all-or-nothing gangs). A job that could run on the cluster but does not fit now
// blocks every later job of its device class, so small jobs cannot starve a large gang.
// No I/O, no clock; same inputs give the same placements.
#ifndef DD2_COORDINATOR_SCHEDULER_H_
#define DD2_COORDINATOR_SCHEDULER_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace dd2 {

struct WorkerSlots {
  std::string id;
  std::string device;     // "cpu" or "cuda"
  int64_t total = 1;      // slots the worker offers
  int64_t free = 1;       // slots not held by an active attempt
};

struct QueuedJob {
  std::string job_id;
  int64_t run_priority = 0;
  int64_t priority = 0;
  int64_t run_seq = 0;
  int64_t index = 0;      // position in its run
  int64_t workers = 1;
  std::string device;     // "cpu", "cuda" or "any"
};

struct Placement {
  std::string job_id;
  std::vector<std::string> worker_ids;
};

// Whether a worker of `worker_device` satisfies a job asking for `job_device`.
bool DeviceMatches(const std::string& job_device, const std::string& worker_device);

// The order jobs are placed in (above); job ids break ties, so it is total.
struct QueueOrder {
  bool operator()(const QueuedJob& a, const QueuedJob& b) const;
};
using ReadyQueue = std::set<QueuedJob, QueueOrder>;

// The queue is read in order only until no slot is free, so a caller that keeps its ready jobs
// in a ReadyQueue pays for what it places, not for the queue's length.
std::vector<Placement> Schedule(std::vector<WorkerSlots> workers, const ReadyQueue& queue);

}  // namespace dd2

#endif  // DD2_COORDINATOR_SCHEDULER_H_
