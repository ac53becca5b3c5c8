#include "coordinator/state.h"

#include <gtest/gtest.h>

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
  EXPECT_EQ(s.attempts.at("r/g#1").state, "lost");
}

}  // namespace
}  // namespace dd2
