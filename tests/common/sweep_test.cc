// Sweep expansion (common/sweep.h): grid, zip, seeds and random, the point bound, located errors
// for malformed sweep blocks, and point identities. No coordinator.
#include "common/sweep.h"

#include <filesystem>
#include <fstream>
#include <regex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/test_util.h"

namespace dd2 {
namespace {

using Json = nlohmann::json;
const std::string kBadDir = std::string(DD2_SOURCE_DIR) + "/tests/data/bad_sweep_yaml";

Json Values(const proto::SweepPoint& p) { return Json::parse(p.values_json()); }

Json Params(const proto::SweepPoint& p, const std::string& job) {
  for (const auto& j : p.spec().jobs()) {
    if (j.name() == job) return Json::parse(j.params_json());
  }
  ADD_FAILURE() << "no job " << job;
  return Json::object();
}

proto::SweepSpec MustParse(const std::string& yaml) {
  auto s = ParseSweep(yaml, "test.yaml");
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : proto::SweepSpec();
}

TEST(SweepTest, GridIsTheCartesianProductFirstKeySlowest) {
  auto s = MustParse(R"(name: g
pipeline: dd2
sweep:
  grid: {distill.k: [1, 2], distill.lr: [1e-4, 3e-4, 1e-3]}
)");
  ASSERT_EQ(s.points_size(), 6);
  EXPECT_THAT(std::vector<std::string>(s.keys().begin(), s.keys().end()), ::testing::ElementsAre("distill.k", "distill.lr"));
  EXPECT_EQ(Values(s.points(0)), Json::parse(R"({"distill.k": 1, "distill.lr": 1e-4})"));
  EXPECT_EQ(Values(s.points(2)), Json::parse(R"({"distill.k": 1, "distill.lr": 1e-3})"));
  EXPECT_EQ(Values(s.points(3)), Json::parse(R"({"distill.k": 2, "distill.lr": 1e-4})"));
  EXPECT_EQ(Params(s.points(5), "distill")["k"], 2);
  EXPECT_DOUBLE_EQ(Params(s.points(5), "distill")["lr"].get<double>(), 1e-3);
  // Upstream jobs are identical in every point; the swept job differs.
  EXPECT_EQ(Params(s.points(0), "teacher"), Params(s.points(5), "teacher"));
  EXPECT_EQ(s.objective().job(), "eval-dd2");
}

TEST(SweepTest, ZipPairsListsAndCombinesWithGrid) {
  auto s = MustParse(R"(name: z
jobs:
  - {name: a, type: sleep}
  - {name: b, type: sleep, after: [a]}
sweep:
  grid: {jobs.a.params.steps: [3, 4]}
  zip: {jobs.b.params.seconds: [0.1, 0.2], jobs.b.params.steps: [5, 6]}
)");
  ASSERT_EQ(s.points_size(), 4);
  EXPECT_EQ(Values(s.points(1)), Json::parse(R"({"jobs.a.params.steps": 3, "jobs.b.params.seconds": 0.2, "jobs.b.params.steps": 6})"));
  EXPECT_EQ(Params(s.points(1), "b")["steps"], 6);
  EXPECT_EQ(Params(s.points(3), "a")["steps"], 4);
}

TEST(SweepTest, SeedsSetTheSeedOfTheJobsThatDifferAndTheirDependents) {
  auto s = MustParse(R"(name: s
jobs:
  - {name: up, type: sleep}
  - {name: mid, type: sleep, after: [up]}
  - {name: down, type: sleep, after: [mid]}
sweep:
  grid: {jobs.mid.params.steps: [2, 3]}
  seeds: [7, 9]
)");
  ASSERT_EQ(s.points_size(), 4);
  EXPECT_EQ(Values(s.points(1)), Json::parse(R"({"jobs.mid.params.steps": 2, "seed": 9})"));
  EXPECT_EQ(Params(s.points(1), "mid")["seed"], 9);
  EXPECT_EQ(Params(s.points(1), "down")["seed"], 9);
  EXPECT_EQ(Params(s.points(1), "up")["seed"], 0);  // shared upstream keeps one seed
  EXPECT_EQ(s.keys(s.keys_size() - 1), "seed");
}

TEST(SweepTest, SeedsAloneSeedEveryJob) {
  auto s = MustParse("name: s\njobs:\n  - {name: a, type: sleep}\nsweep: {seeds: 3}\n");
  ASSERT_EQ(s.points_size(), 3);
  EXPECT_EQ(Params(s.points(2), "a")["seed"], 2);
}

TEST(SweepTest, RandomDrawsAreSeededReproducibleAndInRange) {
  const std::string yaml = R"(name: r
pipeline: dd2
sweep:
  random:
    n: 8
    seed: 3
    space:
      distill.lr: {loguniform: [1e-5, 1e-3]}
      distill.k: {choice: [1, 2, 4]}
      tune.t_min: {uniform: [0.01, 0.1]}
)";
  auto a = MustParse(yaml), b = MustParse(yaml);
  ASSERT_EQ(a.points_size(), 8);
  std::set<double> lrs;
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(a.points(i).values_json(), b.points(i).values_json());
    Json v = Values(a.points(i));
    const double lr = v["distill.lr"].get<double>();
    EXPECT_GE(lr, 1e-5);
    EXPECT_LE(lr, 1e-3);
    lrs.insert(lr);
    EXPECT_THAT(v["distill.k"].get<int>(), ::testing::AnyOf(1, 2, 4));
    EXPECT_GE(v["tune.t_min"].get<double>(), 0.01);
    EXPECT_LE(v["tune.t_min"].get<double>(), 0.1);
  }
  EXPECT_EQ(lrs.size(), 8u);
  auto c = MustParse(std::regex_replace(yaml, std::regex("seed: 3"), "seed: 4"));
  EXPECT_NE(c.points(0).values_json(), a.points(0).values_json());
}

TEST(SweepTest, PointIdentityIgnoresTheOrderOfTheFileAndNamesTheConfig) {
  auto a = MustParse("name: a\npipeline: dd2\nsweep:\n  grid: {distill.k: [1, 2]}\n");
  auto b = MustParse("name: b\npipeline: dd2\nsweep:\n  grid: {distill.k: [2, 1, 4]}\n");
  EXPECT_EQ(a.points(0).identity(), b.points(1).identity());  // the run's name is not part of it
  EXPECT_EQ(a.points(1).identity(), b.points(0).identity());
  EXPECT_NE(a.points(0).identity(), a.points(1).identity());
}

TEST(SweepTest, TheBoundCanBeRaised) {
  auto s = ParseSweep("name: s\njobs:\n  - {name: a, type: sleep}\nsweep: {seeds: 1200, max_points: 2000}\n", "t.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->points_size(), 1200);
}

TEST(SweepTest, EarlyStopIsParsed) {
  auto s = MustParse(R"(name: e
pipeline: dd2
eval_every: {steps: 50}
sweep:
  grid: {distill.k: [1, 2, 4, 8]}
  early_stop: {metric: fid, mode: min, rungs: [50, 100], keep: 0.5}
)");
  EXPECT_EQ(s.early_stop().job(), "distill");
  EXPECT_THAT(std::vector<uint64_t>(s.early_stop().rungs().begin(), s.early_stop().rungs().end()),
              ::testing::ElementsAre(50, 100));
  EXPECT_DOUBLE_EQ(s.early_stop().keep(), 0.5);
}

TEST(SweepTest, AtLeastTenMalformedSweepBlocks) { EXPECT_GE(testing::SortedFiles(kBadDir).size(), 10u); }

// Each file's first line says `# expect: TEXT`; the error must contain TEXT and start with
// FILE:LINE:COLUMN pointing into the sweep block (line 4 or later).
TEST(SweepTest, EveryMalformedSweepIsRejectedWithItsLocation) {
  for (const auto& path : testing::SortedFiles(kBadDir)) {
    EXPECT_GE(testing::ExpectLocatedError(path, LoadSubmission(path).status()), 4) << path;
  }
}

TEST(SweepTest, APointsErrorNamesItsValues) {
  auto s = ParseSweep("name: s\npipeline: dd2\nsweep:\n  grid: {distill.k: [1, 0], distill.lr: [1e-4]}\n", "t.yaml");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()),
              ::testing::MatchesRegex("t\\.yaml:4:25: distill\\.k: .* \\(sweep point 2: distill\\.k=0, distill\\.lr=0\\.0001\\)"));
}

TEST(SweepTest, TheKSweepExampleSharesItsUpstreamStages) {
  auto s = LoadSubmission(std::string(DD2_SOURCE_DIR) + "/examples/sweep-k.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(s->sweep.has_value());
  ASSERT_EQ(s->sweep->points_size(), 8);  // K in {1, 2, 4, 8} x 2 seeds
  for (const char* job : {"tokenizer", "teacher", "featurenet", "tune"}) {
    for (int i = 1; i < 8; ++i) EXPECT_EQ(Params(s->sweep->points(i), job), Params(s->sweep->points(0), job)) << job;
  }
  EXPECT_EQ(Params(s->sweep->points(7), "distill")["k"], 8);
  EXPECT_EQ(Params(s->sweep->points(7), "distill")["seed"], 1);
  EXPECT_EQ(Params(s->sweep->points(7), "eval-dd2")["seed"], 1);
}

TEST(SweepTest, AFileWithoutASweepIsARun) {
  const std::string path = std::string(DD2_SOURCE_DIR) + "/examples/smoke.yaml";
  auto s = LoadSubmission(path);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->run.has_value());
  EXPECT_FALSE(s->sweep.has_value());
}

}  // namespace
}  // namespace dd2
