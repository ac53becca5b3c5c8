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

std::map<std::string, std::vector<std::string>> CoordinatorState::ActiveAttemptsByWorker() const {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& id : active_attempts) {
    for (absl::string_view w : absl::StrSplit(attempts.at(id).worker_ids, ',')) out[std::string(w)].push_back(id);
  }
  return out;
}

void CoordinatorState::PutAttempt(const AttemptRecord& r) {
  auto count = [this](const std::string& worker_ids, int64_t delta) {
    for (absl::string_view w : absl::StrSplit(worker_ids, ',', absl::SkipEmpty())) {
      auto it = used_slots.try_emplace(std::string(w), 0).first;
      if ((it->second += delta) == 0) used_slots.erase(it);
    }
  };
  auto old = attempts.find(r.id);
  if (old != attempts.end() && active_attempts.count(r.id)) count(old->second.worker_ids, -1);
  attempts[r.id] = r;
  if (IsTerminal(r.state)) {
    active_attempts.erase(r.id);
  } else {
    active_attempts.insert(r.id);
    count(r.worker_ids, +1);
  }
}

int64_t CoordinatorState::UsedSlots(const std::string& worker_id) const {
  auto it = used_slots.find(worker_id);
  return it == used_slots.end() ? 0 : it->second;
}

}  // namespace dd2
