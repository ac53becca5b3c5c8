#include "common/checkpoint_manifest.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/job_outputs.h"
#include "common/json_fields.h"
#include "tests/testing/test_util.h"

namespace dd2 {
namespace {

// Manifests come from files a job child wrote: a wrong type or a path out of the folder is
// DataLoss, never an exception (the fuzz target files_fuzz found one: "step" as a string).
TEST(CheckpointManifestTest, MalformedManifestsAreDataLossNotExceptions) {
  testing::TempDir dir;
  const std::string ckpt = dir.path() + "/ckpt-000000000010.pt";
  std::ofstream(ckpt) << "weights";
  ASSERT_TRUE(CommitCheckpoint(ckpt, 10, "r/j#1").ok());
  ASSERT_TRUE(ReadManifest(ckpt).ok());
  for (const char* text : {R"({"step": "ten", "sha256": "x", "file": "a.pt"})", R"({"step": 1, "sha256": 5, "file": "a.pt"})",
                           R"({"step": 1, "sha256": "x", "file": "../../etc/passwd"})", R"({"step": 1, "sha256": "x", "file": ".."})",
                           R"({"step": -3, "sha256": "x", "file": "a.pt"})", R"([1, 2])", "not json"}) {
    std::ofstream(ManifestPathFor(ckpt), std::ios::trunc) << text;
    auto m = ReadManifest(ckpt);
    EXPECT_TRUE(absl::IsDataLoss(m.status())) << text;
  }
}

TEST(CheckpointManifestTest, OutputsManifestReadsOnlyItsOwnFolder) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.path() + "/job");
  std::ofstream(dir.path() + "/secret") << "x";
  for (const char* text : {R"({"files": {"../secret": {"bytes": 1, "sha256": "x"}}})", R"({"files": {"a": [1]}})"}) {
    const std::string path = dir.path() + "/job/outputs.json";
    std::ofstream(path, std::ios::trunc) << text;
    auto st = VerifyOutputs(path, Sha256Hex(text));
    EXPECT_FALSE(st.ok()) << text;
  }
}

TEST(JsonFieldsTest, WrongTypesGiveTheFallback) {
  const auto j = nlohmann::json::parse(R"({"n": 3, "neg": -1, "s": "x", "d": 1.5, "b": true})");
  EXPECT_EQ(FieldOr(j, "n", int64_t{0}), 3);
  EXPECT_EQ(FieldOr(j, "neg", uint64_t{7}), 7u);
  EXPECT_EQ(FieldOr(j, "s", int64_t{9}), 9);
  EXPECT_EQ(FieldOr(j, "n", std::string("f")), "f");
  EXPECT_EQ(FieldOr(j, "d", 0.0), 1.5);
  EXPECT_EQ(FieldOr(j, "d", int64_t{2}), 2);
  EXPECT_EQ(FieldOr(j, "b", false), true);
  EXPECT_EQ(FieldOr(nlohmann::json::array(), "n", int64_t{4}), 4);
}

}  // namespace
}  // namespace dd2
