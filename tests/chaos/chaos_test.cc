// The chaos test: the harness (tests/chaos/chaos.h) with a fixed seed and 12 kill -9 faults
// during a DD2 pipeline; passes when every fault fired and every check held. The fault log is
// printed with the test's output. Another seed: DD2_CHAOS_SEED=N, or run dd2-chaos --seed N.
#include <cstdlib>
#include <iostream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/chaos/chaos.h"
#include "tests/testing/test_util.h"

namespace dd2::chaos {
namespace {

TEST(ChaosPlanTest, PlansTheAimedMomentsAndSeededRandomFaults) {
  const auto plan = PlanFaults(3, 12);
  ASSERT_EQ(plan.size(), 12u);
  auto count = [&](const std::string& moment) {
    return std::count_if(plan.begin(), plan.end(), [&](const Fault& f) { return f.moment == moment; });
  };
  EXPECT_EQ(count("checkpoint_write"), 3);
  EXPECT_EQ(count("attempt_end"), 2);
  EXPECT_EQ(count("finish_transition"), 2);
  EXPECT_EQ(count("random"), 5);
  for (size_t i = 0; i < plan.size(); ++i) {
    const Fault& f = plan[i];
    if (f.moment == "checkpoint_write") {
      EXPECT_LE(i, plan.size() / 2) << "checkpoint faults come while checkpoints are still written";
    }
    if (f.moment == "finish_transition") {
      EXPECT_EQ(f.target, "coordinator");
    }
    if (f.moment == "random") {
      EXPECT_THAT(f.delay_ms, ::testing::AllOf(::testing::Ge(500), ::testing::Lt(4500)));
    }
  }
  auto moments = [](const std::vector<Fault>& p) {
    std::string s;
    for (const auto& f : p) s += f.target + "/" + f.moment + " ";
    return s;
  };
  EXPECT_EQ(moments(PlanFaults(3, 12)), moments(plan)) << "the same seed plans the same faults";
  EXPECT_NE(moments(PlanFaults(4, 12)), moments(plan));
}

TEST(ChaosTest, TwelveKillsDuringADd2PipelineLoseNothing) {
  testing::TempDir dir;
  Options o;
  const char* seed = std::getenv("DD2_CHAOS_SEED");
  o.seed = seed ? std::strtoull(seed, nullptr, 10) : 20261203;
  o.faults = 12;
  o.home = dir.path() + "/home";
  o.bin_dir = DD2_BIN_DIR;
  const Report r = chaos::Run(o, std::cout);
  EXPECT_EQ(r.fired(), 12) << "every planned fault must fire";
  EXPECT_THAT(r.failures, ::testing::IsEmpty());
}

}  // namespace
}  // namespace dd2::chaos
