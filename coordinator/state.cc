#include "coordinator/state.h"

#include "absl/strings/str_split.h"

namespace dd2 {

bool Holds(const AttemptRecord& a, const std::string& worker_id) {
  for (absl::string_view w : absl::StrSplit(a.worker_ids, ',')) {
    if (w == worker_id) return true;
  }
  return false;
}

std::vector<std::string> CoordinatorState::ActiveAttemptsOf(const std::string& worker_id) const {
  std::vector<std::string> out;
  for (const auto& id : active_attempts) {
    if (Holds(attempts.at(id), worker_id)) out.push_back(id);
  }
  return out;
}

std::map<std::string, int64_t> CoordinatorState::UsedSlots() const {
  std::map<std::string, int64_t> used;
  for (const auto& id : active_attempts) {
    const std::string& ids = attempts.at(id).worker_ids;
    if (ids.find(',') == std::string::npos) {
      ++used[ids];  // one rank: no split, no copy
      continue;
    }
    for (absl::string_view w : absl::StrSplit(ids, ',')) ++used[std::string(w)];
  }
  return used;
}

}  // namespace dd2
