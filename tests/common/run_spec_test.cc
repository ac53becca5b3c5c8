#include "common/run_spec.h"

#include <filesystem>
#include <fstream>
#include <regex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/test_util.h"

namespace dd2 {
namespace {

const std::string kBadDir = std::string(DD2_SOURCE_DIR) + "/tests/data/bad_run_yaml";

std::vector<std::string> BadFiles() { return testing::SortedFiles(kBadDir); }

TEST(RunSpecTest, ThereAreAtLeastThirtyMalformedFiles) { EXPECT_GE(BadFiles().size(), 30u); }

// Each file's first line says `# expect: TEXT`; the error must contain TEXT and start with
// FILE:LINE:COLUMN.
TEST(RunSpecTest, EveryMalformedFileIsRejectedWithItsLocation) {
  for (const auto& path : BadFiles()) testing::ExpectLocatedError(path, LoadRunSpec(path).status());
}

TEST(RunSpecTest, SmokeExampleParsesWithDefaultsFilled) {
  auto spec = LoadRunSpec(std::string(DD2_SOURCE_DIR) + "/examples/smoke.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name(), "smoke");
  ASSERT_EQ(spec->jobs_size(), 4);
  EXPECT_EQ(spec->jobs(3).after_size(), 2);
  auto params = nlohmann::json::parse(spec->jobs(0).params_json());
  EXPECT_EQ(params["steps"], 5);
  EXPECT_EQ(params["fail_at_step"], 0);  // default filled in
  EXPECT_EQ(spec->jobs(0).resources().workers(), 1u);
  EXPECT_EQ(spec->jobs(0).resources().device(), "any");
  EXPECT_TRUE(ValidateRunSpec(*spec).ok());
}

TEST(RunSpecTest, QualityPipelineCarriesRetentionAndCheckpointEvals) {
  auto spec = LoadRunSpec(std::string(DD2_SOURCE_DIR) + "/examples/fmnist.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(ValidateRunSpec(*spec).ok());
  std::map<std::string, proto::JobSpec> jobs;
  for (const auto& j : spec->jobs()) jobs[j.name()] = j;
  const auto& distill = jobs["distill"];
  EXPECT_EQ(distill.retention().keep_latest(), 2u);
  EXPECT_EQ(distill.eval_every().steps(), 1000u);
  EXPECT_THAT(distill.after(), ::testing::Contains("featurenet"));
  auto eval = nlohmann::json::parse(distill.eval_every().params_json());
  EXPECT_EQ(eval["sampler"], "dd2");
  EXPECT_EQ(eval["samples"], 500);
  EXPECT_EQ(eval["featurenet"], "featurenet");
  EXPECT_FALSE(jobs["eval-dd2"].has_retention());
  EXPECT_EQ(jobs["eval-dd2"].resources().workers(), 1u);
}

TEST(RunSpecTest, GangPipelineKeepsEvalsOnOneWorker) {
  auto spec = ParseRunSpec("name: g\npipeline: dd2\nresources: {workers: 2}\n", "g.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  for (const auto& j : spec->jobs()) {
    EXPECT_EQ(j.resources().workers(), j.type() == "eval" ? 1u : 2u) << j.name();
  }
}

TEST(RunSpecTest, Dd2PipelineExpandsIntoTheJobDag) {
  auto spec = LoadRunSpec(std::string(DD2_SOURCE_DIR) + "/examples/fmnist-quick.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  std::map<std::string, proto::JobSpec> jobs;
  for (const auto& j : spec->jobs()) jobs[j.name()] = j;
  ASSERT_EQ(jobs.size(), 11u);
  EXPECT_EQ(jobs["distill"].after(0), "tune");
  auto distill = nlohmann::json::parse(jobs["distill"].params_json());
  EXPECT_EQ(distill["init"], "tune");
  EXPECT_EQ(nlohmann::json::parse(jobs["eval-dd2-k4"].params_json())["multistep_k"], 4);
  EXPECT_EQ(jobs["teacher"].after(0), "tokenizer");
  EXPECT_EQ(jobs["eval-teacher"].after_size(), 2);
  auto teacher = nlohmann::json::parse(jobs["teacher"].params_json());
  EXPECT_EQ(teacher["tokenizer"], "tokenizer");
  EXPECT_EQ(teacher["width"], 64);
  EXPECT_EQ(teacher["label_dropout"], 0.1);  // default filled in
  EXPECT_EQ(nlohmann::json::parse(jobs["eval-teacher"].params_json())["sampler"], "teacher");
  EXPECT_EQ(nlohmann::json::parse(jobs["eval-set-prediction"].params_json())["sampler"], "set_prediction");
  EXPECT_EQ(jobs["featurenet"].resources().device(), "cpu");
  EXPECT_TRUE(ValidateRunSpec(*spec).ok());
}

TEST(RunSpecTest, ImportedTeacherExpandsIntoImportAdaptAndTheStagesWithoutAFeatureNetwork) {
  auto spec = ParseRunSpec(R"(name: l
pipeline: dd2
tokenizer: {import: {file: /models/vq_ds16_c2i.pt}}
teacher: {import: {file: /models/c2i_L_256.pt, preset: L}}
adapt: {steps: 50}
eval_every: {steps: 100}
)", "l.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(ValidateRunSpec(*spec).ok());
  std::map<std::string, proto::JobSpec> jobs;
  for (const auto& j : spec->jobs()) jobs[j.name()] = j;
  EXPECT_EQ(jobs.size(), 12u);
  EXPECT_EQ(jobs.count("featurenet"), 0u);
  EXPECT_EQ(jobs["tokenizer"].type(), "import_tokenizer");
  EXPECT_EQ(nlohmann::json::parse(jobs["tokenizer"].params_json())["file"], "/models/vq_ds16_c2i.pt");
  EXPECT_EQ(jobs["teacher-import"].type(), "import_teacher");
  auto imported = nlohmann::json::parse(jobs["teacher-import"].params_json());
  EXPECT_EQ(imported["preset"], "L");
  EXPECT_EQ(imported["tokenizer"], "tokenizer");
  EXPECT_EQ(jobs["teacher"].type(), "adapt");
  auto adapt = nlohmann::json::parse(jobs["teacher"].params_json());
  EXPECT_EQ(adapt["teacher"], "teacher-import");
  EXPECT_EQ(adapt["steps"], 50);
  EXPECT_THAT(jobs["teacher"].after(), ::testing::ElementsAre("teacher-import"));
  EXPECT_EQ(nlohmann::json::parse(jobs["tune"].params_json())["teacher"], "teacher");
  EXPECT_THAT(jobs["eval-dd2"].after(), ::testing::ElementsAre("distill"));
  EXPECT_THAT(jobs["distill"].after(), ::testing::ElementsAre("tune"));
  EXPECT_EQ(nlohmann::json::parse(jobs["eval-teacher-import"].params_json())["teacher"], "teacher-import");
  EXPECT_EQ(nlohmann::json::parse(jobs["eval-teacher"].params_json())["teacher"], "teacher");
}

TEST(RunSpecTest, MissingFileNamesThePath) {
  auto spec = LoadRunSpec("/nonexistent/run.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(std::string(spec.status().message()), ::testing::StartsWith("/nonexistent/run.yaml:1:1:"));
}

TEST(RunSpecTest, ValidateRejectsWireSpecsWithCycles) {
  auto spec = ParseRunSpec("name: x\njobs:\n  - {name: a, type: sleep}\n  - {name: b, type: sleep}\n", "t");
  ASSERT_TRUE(spec.ok());
  spec->mutable_jobs(0)->add_after("b");
  spec->mutable_jobs(1)->add_after("a");
  EXPECT_FALSE(ValidateRunSpec(*spec).ok());
  spec->mutable_jobs(1)->set_type("nope");
  EXPECT_FALSE(ValidateRunSpec(*spec).ok());
}

}  // namespace
}  // namespace dd2
