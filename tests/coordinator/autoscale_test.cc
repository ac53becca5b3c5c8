// The autoscaling policy on made-up views, and its settings file.
#include "coordinator/autoscale.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "tests/testing/test_util.h"

namespace dd2 {
namespace {

AutoscaleConfig Config() {
  AutoscaleConfig c;
  c.device = "cuda";
  c.gpus_per_node = 4;
  c.wait_s = 30;
  c.max_allocations = 3;
  c.max_workers = 16;
  return c;
}

AutoscaleView View(std::vector<WaitingJob> ready, int64_t now_ms = 100000) {
  AutoscaleView v;
  v.now_ms = now_ms;
  v.ready = std::move(ready);
  return v;
}

TEST(AutoscaleTest, WaitsForTheThresholdBeforeActing) {
  EXPECT_EQ(DecideAutoscale(Config(), View({{"r/a", 1, "cuda", 90000}})).nodes, 0);  // 10 s < 30 s
  auto d = DecideAutoscale(Config(), View({{"r/a", 1, "cuda", 60000}}));
  EXPECT_EQ(d.nodes, 1);
  EXPECT_THAT(d.why, ::testing::HasSubstr("1 jobs waited over 30 s for 1 workers"));
}

TEST(AutoscaleTest, SizesTheAllocationToTheWaitingGangsInWholeNodes) {
  // 3 + 4 + 2 workers wanted, 4 per node: 3 nodes.
  auto d = DecideAutoscale(Config(), View({{"r/a", 3, "cuda", 0}, {"r/b", 4, "any", 0}, {"r/c", 2, "cuda", 0}}));
  EXPECT_EQ(d.nodes, 3);
}

TEST(AutoscaleTest, CountsFreeAndComingWorkers) {
  AutoscaleView v = View({{"r/a", 1, "cuda", 0}, {"r/b", 1, "cuda", 0}});
  v.free_workers = 1;
  v.coming_workers = 1;
  EXPECT_EQ(DecideAutoscale(Config(), v).nodes, 0) << "two waiting, two there or on their way";
  v.coming_workers = 0;
  EXPECT_EQ(DecideAutoscale(Config(), v).nodes, 1);
}

TEST(AutoscaleTest, AGangTakesWorkersOfSeveralAllocations) {
  AutoscaleView v = View({{"r/gang", 8, "cuda", 0}});
  v.coming_workers = 7;  // the gang's ranks meet at a rendezvous wherever they run: one more will do
  EXPECT_EQ(DecideAutoscale(Config(), v).nodes, 1);
  v.coming_workers = 2;
  EXPECT_EQ(DecideAutoscale(Config(), v).nodes, 2);
}

TEST(AutoscaleTest, StaysWithinItsLimitsAndSaysWhy) {
  AutoscaleView v = View({{"r/a", 16, "cuda", 0}});
  v.unfinished_allocations = 3;
  auto d = DecideAutoscale(Config(), v);
  EXPECT_EQ(d.nodes, 0);
  EXPECT_THAT(d.why, ::testing::HasSubstr("max_allocations (3)"));
  EXPECT_EQ(d.held_by, "max_allocations");
  v.unfinished_allocations = 1;
  v.allocation_workers = 8;
  v.coming_workers = 0;
  EXPECT_EQ(DecideAutoscale(Config(), v).nodes, 2) << "room for 8 more workers: 2 nodes";
  v.allocation_workers = 16;
  EXPECT_THAT(DecideAutoscale(Config(), v).why, ::testing::HasSubstr("max_workers (16)"));
}

TEST(AutoscaleTest, HoldsOffWhileSbatchBacksOff) {
  AutoscaleView v = View({{"r/a", 1, "cuda", 0}});
  v.backoff_until_ms = v.now_ms + 20000;
  auto d = DecideAutoscale(Config(), v);
  EXPECT_EQ(d.nodes, 0);
  EXPECT_THAT(d.why, ::testing::HasSubstr("backing off for 20 s"));
  EXPECT_EQ(d.held_by, "backoff");
  AutoscaleConfig c = Config();
  c.sbatch_backoff_s = 30;
  c.sbatch_backoff_max_s = 100;
  EXPECT_EQ(SbatchBackoffMs(c, 1), 30000);
  EXPECT_EQ(SbatchBackoffMs(c, 2), 60000);
  EXPECT_EQ(SbatchBackoffMs(c, 3), 100000);
  EXPECT_EQ(SbatchBackoffMs(c, 9), 100000);
}

TEST(AutoscaleTest, IgnoresJobsItsWorkersCouldNotRun) {
  EXPECT_EQ(DecideAutoscale(Config(), View({{"r/a", 1, "cpu", 0}})).nodes, 0);
}

TEST(AutoscaleTest, ReadsItsSettingsAndNamesTheLineOfAnError) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/autoscale.yaml";
  std::ofstream(path) << "partition: gpu\ngpus_per_node: 8\ndevice: cpu\nwait_s: 5\nidle_timeout_s: 60\n"
                         "sbatch_args: [--qos=high]\nmax_workers: 64\n";
  auto c = LoadAutoscaleConfig(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->partition, "gpu");
  EXPECT_EQ(c->gpus_per_node, 8);
  EXPECT_EQ(c->device, "cpu");
  EXPECT_EQ(c->wait_s, 5);
  EXPECT_EQ(c->sbatch_args, std::vector<std::string>{"--qos=high"});
  std::ofstream(path) << "partition: gpu\ngpus_per_nod: 8\n";
  EXPECT_THAT(std::string(LoadAutoscaleConfig(path).status().message()),
              ::testing::HasSubstr(path + ":2:1: gpus_per_nod: unknown key"));
  std::ofstream(path) << "wait_s: soon\n";
  EXPECT_THAT(std::string(LoadAutoscaleConfig(path).status().message()),
              ::testing::HasSubstr(path + ":1:9: wait_s: expected a number"));
  std::ofstream(path) << "device: tpu\n";
  EXPECT_THAT(std::string(LoadAutoscaleConfig(path).status().message()), ::testing::HasSubstr("expected cuda or cpu"));
}

}  // namespace
}  // namespace dd2
