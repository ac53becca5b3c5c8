#include "coordinator/scheduler.h"

#include <algorithm>
#include <set>
#include <tuple>

namespace dd2 {

bool DeviceMatches(const std::string& job_device, const std::string& worker_device) {
  return job_device == "any" || job_device == worker_device;
}

std::vector<Placement> Schedule(std::vector<WorkerSlots> workers, std::vector<QueuedJob> queue) {
  std::sort(queue.begin(), queue.end(), [](const QueuedJob& a, const QueuedJob& b) {
    return std::make_tuple(-a.run_priority, -a.priority, a.run_seq, a.index, a.job_id) <
           std::make_tuple(-b.run_priority, -b.priority, b.run_seq, b.index, b.job_id);
  });
  std::sort(workers.begin(), workers.end(),
            [](const WorkerSlots& a, const WorkerSlots& b) { return a.id < b.id; });
  std::set<std::string> blocked;  // device classes held for a gang that does not fit yet
  std::vector<Placement> out;
  for (const QueuedJob& job : queue) {
    bool is_blocked = blocked.count("any") > 0 || blocked.count(job.device) > 0 ||
                      (job.device == "any" && !blocked.empty());
    if (is_blocked) continue;
    // Candidates: matching workers with a free slot, least loaded first, then by id.
    std::vector<WorkerSlots*> candidates;
    int64_t feasible = 0;
    for (auto& w : workers) {
      if (!DeviceMatches(job.device, w.device)) continue;
      ++feasible;
      if (w.free > 0) candidates.push_back(&w);
    }
    if (static_cast<int64_t>(candidates.size()) < job.workers) {
      if (feasible >= job.workers) blocked.insert(job.device);
      continue;  // infeasible jobs wait without blocking others
    }
    std::stable_sort(candidates.begin(), candidates.end(), [](WorkerSlots* a, WorkerSlots* b) {
      return (a->total - a->free) < (b->total - b->free);
    });
    Placement p{job.job_id, {}};
    for (int64_t i = 0; i < job.workers; ++i) {
      --candidates[i]->free;
      p.worker_ids.push_back(candidates[i]->id);
    }
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace dd2
