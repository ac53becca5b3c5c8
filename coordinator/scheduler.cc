#include "coordinator/scheduler.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

namespace dd2 {

bool DeviceMatches(const std::string& job_device, const std::string& worker_device) {
  return job_device == "any" || job_device == worker_device;
}

bool QueueOrder::operator()(const QueuedJob& a, const QueuedJob& b) const {
  return std::tie(b.run_priority, b.priority, a.run_seq, a.index, a.job_id) <
         std::tie(a.run_priority, a.priority, b.run_seq, b.index, b.job_id);  // priorities descending
}

std::vector<Placement> Schedule(std::vector<WorkerSlots> workers, const ReadyQueue& queue) {
  auto by_id = [](const WorkerSlots& a, const WorkerSlots& b) { return a.id < b.id; };
  if (!std::is_sorted(workers.begin(), workers.end(), by_id)) std::sort(workers.begin(), workers.end(), by_id);
  std::set<std::string> blocked;  // device classes held for a gang that does not fit yet
  std::vector<Placement> out;
  int64_t free_total = 0;
  for (const auto& w : workers) free_total += std::max<int64_t>(0, w.free);
  std::map<std::string, int64_t> feasible_of;  // device class -> workers that match it
  auto feasible_for = [&](const std::string& device) {
    auto it = feasible_of.find(device);
    if (it != feasible_of.end()) return it->second;
    int64_t n = 0;
    for (const auto& w : workers) n += DeviceMatches(device, w.device);
    return feasible_of[device] = n;
  };
  for (const QueuedJob& job : queue) {
    if (free_total == 0) break;  // nothing more can be placed; the rest of the queue waits
    bool is_blocked = blocked.count("any") > 0 || blocked.count(job.device) > 0 ||
                      (job.device == "any" && !blocked.empty());
    if (is_blocked) continue;
    if (free_total < job.workers) {  // cannot fit, without looking at each worker
      if (feasible_for(job.device) >= job.workers) blocked.insert(job.device);
      continue;
    }
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
    free_total -= job.workers;
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace dd2
