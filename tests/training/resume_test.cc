// Exact resume, with real processes: each training job type runs once straight through, and
// once in a dd2-train child that is killed with SIGKILL after its mid-run checkpoint appears,
// then resumed by a fresh child. The final parameters must be identical.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/process.h"
#include "tests/testing/test_util.h"
#include "training/checkpoint.h"
#include "training/models.h"

namespace dd2 {
namespace {

namespace fs = std::filesystem;
const std::string kTrain = std::string(DD2_BIN_DIR) + "/dd2-train";

std::vector<std::string> JobArgs(const std::string& type, const std::string& params, const std::string& run_dir,
                                 const std::string& job) {
  return {kTrain, "job-run", "--type", type, "--params", params, "--attempt-id", job + "#1",
          "--run-dir", run_dir, "--job-name", job};
}

// Runs to completion; returns stdout.
std::string RunToEnd(const std::vector<std::string>& argv) {
  auto r = testing::RunCommand(argv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

// Starts the job, SIGKILLs it once `checkpoint` exists, and reports whether it was killed
// before finishing (if it finished first, the test cannot show anything).
bool RunAndKillAfterCheckpoint(const std::vector<std::string>& argv, const std::string& checkpoint,
                               const std::string& final_file) {
  pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "w", stdout);
    ExecOrExit(argv);
  }
  while (!fs::exists(checkpoint) && !fs::exists(final_file)) {
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && !fs::exists(final_file);
}

void ExpectSameParameters(const std::shared_ptr<torch::nn::Module>& a, const std::shared_ptr<torch::nn::Module>& b) {
  auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) {
    EXPECT_TRUE(item.value().equal(pb[item.key()])) << item.key();
  }
}

struct Case {
  std::string type;
  std::string params;  // checkpoint_every is half of steps
  std::string module;  // the name in final.pt
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.type; }

class ResumeTest : public ::testing::TestWithParam<Case> {};

TEST_P(ResumeTest, KilledAndResumedRunEndsWithIdenticalParameters) {
  const Case& c = GetParam();
  testing::TempDir dir;
  const std::string straight = dir.path() + "/straight", resumed = dir.path() + "/resumed";
  if (c.type == "teacher") {  // needs a tokenizer artifact in both run directories
    const std::string tok = R"({"steps": 4, "batch": 8, "channels": 16, "codebook_size": 32, "train_limit": 256})";
    RunToEnd(JobArgs("tokenizer", tok, straight, "tokenizer"));
    fs::create_directories(resumed);
    fs::copy(straight + "/tokenizer", resumed + "/tokenizer", fs::copy_options::recursive);
  }
  RunToEnd(JobArgs(c.type, c.params, straight, "job"));
  const auto argv = JobArgs(c.type, c.params, resumed, "job");
  ASSERT_TRUE(RunAndKillAfterCheckpoint(argv, resumed + "/job/checkpoint.pt", resumed + "/job/final.pt"))
      << "the job finished before it could be killed; make it longer";
  EXPECT_THAT(RunToEnd(argv), ::testing::HasSubstr("resumed from"));

  std::shared_ptr<torch::nn::Module> a, b;
  if (c.type == "tokenizer") {
    VqVaeOptions o;
    o.channels = 16;
    o.codebook_size = 32;
    a = VqVae(o).ptr();
    b = VqVae(o).ptr();
  } else if (c.type == "teacher") {
    TransformerOptions o;
    o.vocab = 32;
    o.width = 16;
    o.heads = 2;
    a = ArTransformer(o).ptr();
    b = ArTransformer(o).ptr();
  } else {
    a = FeatureNet().ptr();
    b = FeatureNet().ptr();
  }
  ASSERT_TRUE(LoadCheckpoint(straight + "/job/final.pt", {{c.module, a}}, nullptr).ok());
  ASSERT_TRUE(LoadCheckpoint(resumed + "/job/final.pt", {{c.module, b}}, nullptr).ok());
  ExpectSameParameters(a, b);
  if (c.type == "tokenizer") EXPECT_TRUE(a->named_buffers()["usage"].equal(b->named_buffers()["usage"]));
}

INSTANTIATE_TEST_SUITE_P(
    JobTypes, ResumeTest,
    ::testing::Values(
        Case{"tokenizer",
             R"({"steps": 60, "checkpoint_every": 30, "batch": 16, "channels": 16, "codebook_size": 32, "train_limit": 512, "restart_every": 10})",
             "vqvae"},
        Case{"teacher",
             R"({"steps": 60, "checkpoint_every": 30, "batch": 16, "width": 16, "heads": 2, "train_limit": 256})",
             "teacher"},
        Case{"featurenet", R"({"steps": 60, "checkpoint_every": 30, "batch": 32, "train_limit": 512})", "featurenet"}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.type; });

}  // namespace
}  // namespace dd2
