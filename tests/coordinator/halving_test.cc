// Successive halving (coordinator/halving.h) on fake metrics.
#include "coordinator/halving.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace dd2 {
namespace {

std::vector<HalvingPoint> Points(const std::vector<std::map<int64_t, double>>& values) {
  std::vector<HalvingPoint> out;
  for (size_t i = 0; i < values.size(); ++i) out.push_back({"p" + std::to_string(i + 1), int64_t(i + 1), values[i], false});
  return out;
}

std::set<std::string> Kept(const std::vector<HalvingOutcome>& out, int64_t rung) {
  std::set<std::string> k;
  for (const auto& o : out) {
    if (o.rung == rung && o.kept) k.insert(o.identity);
  }
  return k;
}

TEST(HalvingTest, WaitsUntilEveryLivePointHasTheRung) {
  HalvingPolicy policy{{10, 20}, 0.5, false};
  auto points = Points({{{10, 3.0}}, {}, {{10, 1.0}}});
  EXPECT_TRUE(DecideRungs(policy, points, {}).empty());
}

TEST(HalvingTest, KeepsTheBestFractionAtEachRungMinimizing) {
  HalvingPolicy policy{{10, 20}, 0.5, false};
  auto points = Points({{{10, 4.0}, {20, 2.0}}, {{10, 1.0}, {20, 3.0}}, {{10, 2.0}, {20, 1.0}}, {{10, 3.0}}});
  auto out = DecideRungs(policy, points, {});
  EXPECT_EQ(Kept(out, 10), (std::set<std::string>{"p2", "p3"}));
  EXPECT_EQ(Kept(out, 20), (std::set<std::string>{"p3"}));
  EXPECT_EQ(out.size(), 6u);  // 4 judged at rung 10, the 2 survivors at rung 20
}

TEST(HalvingTest, MaximizeAndTiesGoToTheLowerNumber) {
  HalvingPolicy policy{{5}, 0.34, true};
  auto points = Points({{{5, 1.0}}, {{5, 2.0}}, {{5, 2.0}}});
  auto out = DecideRungs(policy, points, {});
  EXPECT_EQ(Kept(out, 5), (std::set<std::string>{"p2", "p3"}));  // ceil(0.34 * 3) = 2
  policy.keep = 0.2;
  out = DecideRungs(policy, points, {});
  EXPECT_EQ(Kept(out, 5), (std::set<std::string>{"p2"}));  // at least one; tie to the lower number
}

TEST(HalvingTest, FinishedPointsWithoutTheMetricAreStopped) {
  HalvingPolicy policy{{10}, 0.5, false};
  auto points = Points({{{10, 1.0}}, {{10, 2.0}}, {}});
  points[2].finished = true;
  auto out = DecideRungs(policy, points, {});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(Kept(out, 10), (std::set<std::string>{"p1"}));
  EXPECT_FALSE(out[2].value.has_value());
}

TEST(HalvingTest, DecidedRungsAreNotRevisitedAndTheSameInputsGiveTheSameDecisions) {
  HalvingPolicy policy{{10, 20}, 0.5, false};
  auto points = Points({{{10, 4.0}, {20, 9.0}}, {{10, 1.0}, {20, 3.0}}, {{10, 2.0}, {20, 1.0}}, {{10, 3.0}, {20, 0.5}}});
  auto all = DecideRungs(policy, points, {});
  EXPECT_EQ(all, DecideRungs(policy, points, {}));
  std::map<int64_t, std::vector<HalvingOutcome>> decided;
  for (const auto& o : all) {
    if (o.rung == 10) decided[10].push_back(o);
  }
  // Later metrics at rung 10 do not change the recorded decision; rung 20 comes out the same.
  points[0].values[10] = 0.0;
  auto rest = DecideRungs(policy, points, decided);
  std::vector<HalvingOutcome> expected;
  for (const auto& o : all) {
    if (o.rung == 20) expected.push_back(o);
  }
  EXPECT_EQ(rest, expected);
  EXPECT_EQ(Kept(rest, 20), (std::set<std::string>{"p3"}));
}

TEST(HalvingTest, PointsAddedAfterARungAreNotJudgedThere) {
  HalvingPolicy policy{{10, 20}, 0.5, false};
  auto points = Points({{{10, 1.0}, {20, 5.0}}, {{10, 2.0}}, {{20, 1.0}}});
  std::map<int64_t, std::vector<HalvingOutcome>> decided = {
      {10, {{10, "p1", 1.0, true}, {10, "p2", 2.0, false}}}};
  auto out = DecideRungs(policy, points, decided);
  EXPECT_EQ(Kept(out, 20), (std::set<std::string>{"p3"}));  // p1 and p3 compete at 20
  EXPECT_EQ(out.size(), 2u);
}

}  // namespace
}  // namespace dd2
