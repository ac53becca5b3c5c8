// Data parallelism with real processes and c10d Gloo on 127.0.0.1: a 2-rank distill job with
// per-rank batch B ends with the same parameters (1e-5 relative) as a 1-rank job with batch 2B
// (and not as one with batch B),
// and a rank whose peer never arrives fails with the cause "collective timeout".
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/process.h"
#include "tests/testing/test_util.h"
#include "tests/training/train_test_util.h"

namespace dd2 {
namespace {

namespace fs = std::filesystem;
using testing::JobArgs;
using testing::RunToEnd;

std::string DistillParams(int batch) {
  return absl::StrCat(R"({"steps": 20, "k": 2, "m": 2, "cfg": 2.0, "lr": 3e-4, "guidance_lr": 3e-4, )",
                      R"("checkpoint_every": 0, "collective_timeout_s": 60, "batch": )", batch, "}");
}

TEST(GangTest, TwoRanksWithBatchBMatchOneRankWithBatch2B) {
  testing::TempDir dir;
  const std::string one = dir.path() + "/one", two = dir.path() + "/two";
  fs::create_directories(two);
  for (const auto& s : {testing::TinyTokenizer(), testing::TinyTeacher(), testing::TinyTune()}) {
    RunToEnd(JobArgs(s.type, s.params, one, s.job));
    fs::copy(one + "/" + s.job, two + "/" + s.job, fs::copy_options::recursive);
  }
  RunToEnd(JobArgs("distill", DistillParams(8), one, "distill"));

  const std::string rendezvous = absl::StrCat("tcp://127.0.0.1:", testing::FreePort());
  std::vector<pid_t> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    auto argv = JobArgs("distill", DistillParams(4), two, "distill",
                        {"--rank", std::to_string(rank), "--world-size", "2", "--rendezvous", rendezvous});
    pid_t pid = fork();
    if (pid == 0) {
      freopen("/dev/null", "w", stdout);
      ExecOrExit(argv);
    }
    ranks.push_back(pid);
  }
  for (pid_t pid : ranks) {
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a rank failed";
  }
  const auto pairs = testing::PairTensors(one + "/distill/final.pt", two + "/distill/final.pt");
  ASSERT_GT(pairs.size(), 10u);
  double worst = 0;
  for (const auto& p : pairs) {
    ASSERT_TRUE(p.b.defined()) << p.key;
    if (!p.a.is_floating_point()) continue;
    const double rel = (p.a - p.b).norm().item<double>() / std::max(p.a.norm().item<double>(), 1e-12);
    EXPECT_LE(rel, 1e-5) << p.key;
    worst = std::max(worst, rel);
  }
  std::printf("worst relative difference %.3g over %zu tensors\n", worst, pairs.size());
  // The comparison can tell batches apart: one rank at batch B (not 2B) ends elsewhere.
  RunToEnd(JobArgs("distill", DistillParams(4), one, "distill-b"));
  double far = 0;
  for (const auto& p : testing::PairTensors(one + "/distill/final.pt", one + "/distill-b/final.pt")) {
    if (p.a.is_floating_point()) far = std::max(far, (p.a - p.b).norm().item<double>() / std::max(p.a.norm().item<double>(), 1e-12));
  }
  EXPECT_GT(far, 1e-3);
}

TEST(GangTest, MissingPeerFailsWithCollectiveTimeout) {
  testing::TempDir dir;
  const std::string run = dir.path() + "/run";
  const std::string params = R"({"steps": 4, "batch": 8, "train_limit": 64, "collective_timeout_s": 1})";
  auto r = testing::RunCommand(JobArgs("featurenet", params, run, "job",
                                       {"--rank", "0", "--world-size", "2", "--rendezvous",
                                        absl::StrCat("tcp://127.0.0.1:", testing::FreePort()), "--progress-fd", "1"}));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.out, ::testing::HasSubstr("\"event\":\"cause\""));
  EXPECT_THAT(r.out, ::testing::HasSubstr("timeout"));
}

}  // namespace
}  // namespace dd2
