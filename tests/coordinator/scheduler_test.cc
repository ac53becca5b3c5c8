#include "coordinator/scheduler.h"

#include <gtest/gtest.h>

namespace dd2 {
namespace {

QueuedJob Job(const std::string& id, int64_t seq, int64_t workers = 1, const std::string& device = "any",
              int64_t priority = 0) {
  QueuedJob j;
  j.job_id = id;
  j.run_seq = seq;
  j.workers = workers;
  j.device = device;
  j.priority = priority;
  return j;
}

TEST(SchedulerTest, FifoWhenPrioritiesAreEqual) {
  auto p = Schedule({{"w1", "cpu", 1, 1}}, {Job("late", 2), Job("early", 1)});
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].job_id, "early");
}

TEST(SchedulerTest, HigherPriorityFirst) {
  auto p = Schedule({{"w1", "cpu", 1, 1}}, {Job("early", 1), Job("urgent", 2, 1, "any", 5)});
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].job_id, "urgent");
}

TEST(SchedulerTest, RunPriorityOutranksJobPriority) {
  QueuedJob a = Job("a", 1, 1, "any", 100);
  QueuedJob b = Job("b", 2);
  b.run_priority = 1;
  auto p = Schedule({{"w1", "cpu", 1, 1}}, {a, b});
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].job_id, "b");
}

TEST(SchedulerTest, DeviceMustMatch) {
  auto p = Schedule({{"w1", "cpu", 1, 1}}, {Job("gpu", 1, 1, "cuda"), Job("cpu", 2, 1, "cpu")});
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].job_id, "cpu");
}

TEST(SchedulerTest, GangIsAllOrNothingOnDistinctWorkers) {
  auto p = Schedule({{"w1", "cpu", 2, 2}, {"w2", "cpu", 1, 1}}, {Job("gang", 1, 2)});
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].worker_ids, (std::vector<std::string>{"w1", "w2"}));
  EXPECT_TRUE(Schedule({{"w1", "cpu", 4, 4}}, {Job("gang", 1, 2)}).empty());
}

TEST(SchedulerTest, FeasibleGangThatDoesNotFitBlocksSmallerJobsBehindIt) {
  // w2 is busy; the 2-worker gang is feasible later, so the single job must not take w1.
  auto p = Schedule({{"w1", "cpu", 1, 1}, {"w2", "cpu", 1, 0}}, {Job("gang", 1, 2), Job("small", 2)});
  EXPECT_TRUE(p.empty());
}

TEST(SchedulerTest, InfeasibleGangDoesNotBlockOthers) {
  auto p = Schedule({{"w1", "cpu", 1, 1}}, {Job("huge", 1, 8), Job("small", 2)});
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].job_id, "small");
}

TEST(SchedulerTest, SpreadsOverLeastLoadedWorkers) {
  auto p = Schedule({{"w1", "cpu", 2, 1}, {"w2", "cpu", 2, 2}}, {Job("a", 1), Job("b", 2)});
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].worker_ids[0], "w2");
  EXPECT_EQ(p[1].worker_ids[0], "w1");
}

TEST(SchedulerTest, NeverOverfillsASlot) {
  ReadyQueue q;
  for (int i = 0; i < 10; ++i) q.insert(Job("j" + std::to_string(i), i));
  auto p = Schedule({{"w1", "cpu", 3, 3}}, q);
  EXPECT_EQ(p.size(), 3u);
}

}  // namespace
}  // namespace dd2
