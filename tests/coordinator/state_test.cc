#include "coordinator/state.h"

#include <gtest/gtest.h>

#include <random>

#include "coordinator/snapshot.h"

namespace dd2 {
namespace {

AttemptRecord Attempt(const std::string& id, const std::string& state, const std::string& workers) {
  AttemptRecord a;
  a.id = id;
  a.job_id = id.substr(0, id.find('#'));
  a.state = state;
  a.worker_ids = workers;
  return a;
}

// used_slots follows every attempt record put: one slot per rank while active, none after, and
// a record re-put with other workers moves its slots.
TEST(CoordinatorStateTest, UsedSlotsFollowTheAttemptsPut) {
  CoordinatorState s;
  s.PutAttempt(Attempt("r/a#1", "assigned", "w1"));
  s.PutAttempt(Attempt("r/g#1", "assigned", "w1,w2"));
  EXPECT_EQ(s.UsedSlots("w1"), 2);
  EXPECT_EQ(s.UsedSlots("w2"), 1);
  using Held = std::map<std::string, std::vector<std::string>>;
  EXPECT_EQ(s.ActiveAttemptsByWorker(), (Held{{"w1", {"r/a#1", "r/g#1"}}, {"w2", {"r/g#1"}}}));
  EXPECT_EQ(s.ActiveAttemptsOf("w1"), s.ActiveAttemptsByWorker()["w1"]);
  s.PutAttempt(Attempt("r/a#1", "running", "w1"));  // a state change within active: unchanged
  EXPECT_EQ(s.UsedSlots("w1"), 2);
  s.PutAttempt(Attempt("r/g#1", "running", "w2,w3"));
  EXPECT_EQ(s.UsedSlots("w1"), 1);
  EXPECT_EQ(s.UsedSlots("w3"), 1);
  s.PutAttempt(Attempt("r/a#1", "succeeded", "w1"));
  s.PutAttempt(Attempt("r/a#1", "succeeded", "w1"));  // terminal twice: counted off once
  s.PutAttempt(Attempt("r/g#1", "lost", "w2,w3"));
  EXPECT_EQ(s.UsedSlots("w1"), 0);
  EXPECT_EQ(s.UsedSlots("w2"), 0);
  EXPECT_TRUE(s.used_slots.empty());
  EXPECT_TRUE(s.active_attempts.empty());
  EXPECT_TRUE(s.ActiveAttemptsByWorker().empty());
  EXPECT_EQ(s.attempts.at("r/g#1").state, "lost");
}

// SyncMap and SyncSet make an older copy equal to the current one whatever changed: keys added
// before, between and after the old ones, removed, values changed, everything cleared.
TEST(CoordinatorStateTest, SyncMakesAnOlderCopyEqualToTheCurrentOne) {
  std::mt19937 rng(7);
  std::map<int, std::string> current, copy;
  std::set<int> current_set, copy_set;
  for (int round = 0; round < 200; ++round) {
    const int changes = static_cast<int>(rng() % 20);
    for (int i = 0; i < changes; ++i) {
      const int key = static_cast<int>(rng() % 50);
      switch (rng() % 3) {
        case 0: current.erase(key); current_set.erase(key); break;
        case 1: current[key] = std::to_string(rng() % 4); current_set.insert(key); break;
        default: current[key] += "x"; break;
      }
    }
    if (round % 50 == 49) {
      current.clear();
      current_set.clear();
    }
    SyncMap(current, &copy);
    SyncSet(current_set, &copy_set);
    ASSERT_EQ(copy, current) << "round " << round;
    ASSERT_EQ(copy_set, current_set) << "round " << round;
  }
}

}  // namespace
}  // namespace dd2
