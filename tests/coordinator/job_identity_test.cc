// Job identities (coordinator/job_identity.h): what they depend on and what they ignore.
#include "coordinator/job_identity.h"

#include <gtest/gtest.h>

namespace dd2 {
namespace {

std::vector<IdentityInput> Pipeline(const std::string& teacher_params, const std::string& distill_params) {
  return {{"tokenizer", "tokenizer", R"({"steps": 10, "seed": 0})", 1, {}},
          {"teacher", "teacher", teacher_params, 1, {"tokenizer"}},
          {"distill", "distill", distill_params, 1, {"teacher"}},
          {"eval", "eval", R"({"generator": "distill", "tokenizer": "tokenizer", "samples": 10})", 1, {"featurenet"}},
          {"featurenet", "featurenet", R"({"steps": 5})", 1, {}}};
}

TEST(JobIdentityTest, SameConfigSameIdentityDownstreamChangesOnlyDownstream) {
  auto a = JobIdentities(Pipeline(R"({"tokenizer": "tokenizer", "steps": 5})", R"({"k": 1})"));
  auto b = JobIdentities(Pipeline(R"({"tokenizer": "tokenizer", "steps": 5})", R"({"k": 2})"));
  EXPECT_EQ(a["tokenizer"], b["tokenizer"]);
  EXPECT_EQ(a["teacher"], b["teacher"]);
  EXPECT_EQ(a["featurenet"], b["featurenet"]);
  EXPECT_NE(a["distill"], b["distill"]);
  EXPECT_NE(a["eval"], b["eval"]);  // reads the distill job through its params
  EXPECT_EQ(a["tokenizer"].size(), 64u);
}

// An eval of the teacher names the run's distill job (its `generator` param has a default) but
// never reads it: a K sweep's points share it. A dd2 eval reads it, so it differs per point.
TEST(JobIdentityTest, ParamsTheSamplerDoesNotUseDoNotCount) {
  auto with_eval = [](const std::string& distill, const std::string& sampler) {
    auto jobs = Pipeline(R"({"tokenizer": "tokenizer", "steps": 5})", distill);
    jobs.push_back({"e", "eval",
                    R"({"sampler": ")" + sampler + R"(", "generator": "distill", "teacher": "teacher", "multistep_k": 2})",
                    1, {"teacher"}});
    return JobIdentities(jobs)["e"];
  };
  EXPECT_EQ(with_eval(R"({"k": 1})", "teacher"), with_eval(R"({"k": 8})", "teacher"));
  EXPECT_EQ(with_eval(R"({"k": 1})", "set_prediction"), with_eval(R"({"k": 8})", "set_prediction"));
  EXPECT_NE(with_eval(R"({"k": 1})", "dd2"), with_eval(R"({"k": 8})", "dd2"));
  EXPECT_NE(with_eval(R"({"k": 1})", "dd2_multistep"), with_eval(R"({"k": 8})", "dd2_multistep"));
  EXPECT_NE(with_eval(R"({"k": 1})", "teacher"), with_eval(R"({"k": 1})", "set_prediction"));
}

TEST(JobIdentityTest, UpstreamChangesPropagate) {
  auto a = JobIdentities(Pipeline(R"({"tokenizer": "tokenizer", "steps": 5})", R"({"k": 1})"));
  auto b = JobIdentities(Pipeline(R"({"tokenizer": "tokenizer", "steps": 6})", R"({"k": 1})"));
  EXPECT_NE(a["teacher"], b["teacher"]);
  EXPECT_NE(a["distill"], b["distill"]);
  EXPECT_EQ(a["featurenet"], b["featurenet"]);
}

TEST(JobIdentityTest, SchedulingOnlyParamsAndOrderDoNotCount) {
  auto a = JobIdentities({{"t", "tokenizer", R"({"steps": 10, "device": "cpu", "collective_timeout_s": 30})", 1, {}}});
  auto b = JobIdentities({{"t", "tokenizer", R"({"collective_timeout_s": 300, "steps": 10, "device": "cuda"})", 1, {}}});
  EXPECT_EQ(a["t"], b["t"]);
  auto d1 = JobIdentities({{"d", "distill", R"({"steps": 10, "threads": 2, "parallel": "batch"})", 1, {}}});
  auto d2 = JobIdentities({{"d", "distill", R"({"steps": 10, "parallel": "ops"})", 1, {}}});
  EXPECT_EQ(d1["d"], d2["d"]);
  auto gang = JobIdentities({{"t", "tokenizer", R"({"steps": 10})", 2, {}}});
  EXPECT_NE(a["t"], gang["t"]);  // a gang's results differ from one rank's
  auto other_type = JobIdentities({{"t", "featurenet", R"({"steps": 10})", 1, {}}});
  EXPECT_NE(a["t"], other_type["t"]);
}

TEST(JobIdentityTest, CyclesAndBadParamsHaveNoIdentity) {
  auto ids = JobIdentities({{"a", "sleep", R"({"x": "b"})", 1, {}}, {"b", "sleep", R"({"x": "a"})", 1, {}},
                            {"c", "sleep", "not json", 1, {}}, {"d", "sleep", "{}", 1, {"c"}}});
  EXPECT_EQ(ids["a"], "");
  EXPECT_EQ(ids["b"], "");
  EXPECT_EQ(ids["c"], "");
  EXPECT_EQ(ids["d"], "");
}

}  // namespace
}  // namespace dd2
