// CheckpointsToDelete: the retention policy as a pure function.
#include "coordinator/retention.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace dd2 {
namespace {

using ::testing::ElementsAre;

std::vector<RetainedCheckpoint> Steps(std::vector<std::pair<int64_t, double>> loss) {
  std::vector<RetainedCheckpoint> out;
  for (auto [step, l] : loss) out.push_back({step, {{"loss", l}}});
  return out;
}

TEST(RetentionTest, KeepsTheNewestN) {
  EXPECT_THAT(CheckpointsToDelete(Steps({{300, 1}, {100, 1}, {200, 1}}), {2, 0, "", false}, {}), ElementsAre(100));
}

TEST(RetentionTest, KeepsTheBestMByTheMetricInEitherDirection) {
  auto c = Steps({{100, 0.2}, {200, 0.9}, {300, 0.5}, {400, 0.7}});
  EXPECT_THAT(CheckpointsToDelete(c, {1, 1, "loss", false}, {}), ElementsAre(200, 300));
  EXPECT_THAT(CheckpointsToDelete(c, {1, 1, "loss", true}, {}), ElementsAre(100, 300));
}

TEST(RetentionTest, PinnedCheckpointsStayAndTheResumePointAlwaysStays) {
  auto c = Steps({{100, 1}, {200, 1}, {300, 1}});
  EXPECT_THAT(CheckpointsToDelete(c, {1, 0, "", false}, {100}), ElementsAre(200));
  EXPECT_THAT(CheckpointsToDelete(c, {0, 0, "", false}, {}), ElementsAre(100, 200));  // keep_latest 0 acts as 1
}

TEST(RetentionTest, CheckpointsWithoutTheMetricAreNeverBest) {
  std::vector<RetainedCheckpoint> c = {{100, {}}, {200, {{"fid", 50}}}, {300, {}}};
  EXPECT_THAT(CheckpointsToDelete(c, {1, 1, "fid", false}, {}), ElementsAre(100));
}

}  // namespace
}  // namespace dd2
