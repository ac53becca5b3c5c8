// Exact resume, with real processes: each training job type runs once straight through, and
// once in a dd2-train child that is killed with SIGKILL after its mid-run checkpoint appears,
// then resumed by a fresh child. Every tensor of the two final.pt files must be identical.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/process.h"
#include "tests/testing/test_util.h"

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

// Compares every tensor of two archives, recursing into sub-archives; returns how many.
int ExpectSameArchive(torch::serialize::InputArchive& a, torch::serialize::InputArchive& b, const std::string& at) {
  auto keys = a.keys();
  EXPECT_EQ(keys, b.keys()) << at;
  int tensors = 0;
  for (const auto& key : keys) {
    torch::Tensor ta, tb;
    if (a.try_read(key, ta)) {
      EXPECT_TRUE(b.try_read(key, tb)) << at << key;
      EXPECT_TRUE(ta.equal(tb)) << at << key;
      ++tensors;
      continue;
    }
    torch::serialize::InputArchive sa, sb;
    if (a.try_read(key, sa) && b.try_read(key, sb)) tensors += ExpectSameArchive(sa, sb, at + key + "/");
  }
  return tensors;
}

struct Stage {
  std::string type, job, params;
};

struct Case {
  std::string name;
  std::vector<Stage> setup;  // upstream jobs, run once and copied to both run directories
  Stage job;                 // checkpoint_every is half of steps
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class ResumeTest : public ::testing::TestWithParam<Case> {};

TEST_P(ResumeTest, KilledAndResumedRunEndsWithIdenticalParameters) {
  const Case& c = GetParam();
  testing::TempDir dir;
  const std::string straight = dir.path() + "/straight", resumed = dir.path() + "/resumed";
  fs::create_directories(resumed);
  for (const auto& s : c.setup) {
    RunToEnd(JobArgs(s.type, s.params, straight, s.job));
    fs::copy(straight + "/" + s.job, resumed + "/" + s.job, fs::copy_options::recursive);
  }
  RunToEnd(JobArgs(c.job.type, c.job.params, straight, c.job.job));
  const auto argv = JobArgs(c.job.type, c.job.params, resumed, c.job.job);
  const std::string out = resumed + "/" + c.job.job;
  ASSERT_TRUE(RunAndKillAfterCheckpoint(argv, out + "/checkpoint.pt", out + "/final.pt"))
      << "the job finished before it could be killed; make it longer";
  EXPECT_THAT(RunToEnd(argv), ::testing::HasSubstr("resumed from"));
  torch::serialize::InputArchive a, b;
  a.load_from(straight + "/" + c.job.job + "/final.pt");
  b.load_from(out + "/final.pt");
  EXPECT_GT(ExpectSameArchive(a, b, ""), 5);
}

const Stage kTokenizer{"tokenizer", "tokenizer",
                       R"({"steps": 4, "batch": 8, "channels": 16, "codebook_size": 32, "train_limit": 256})"};
const Stage kTeacher{"teacher", "teacher", R"({"steps": 4, "batch": 8, "width": 16, "heads": 2, "train_limit": 256})"};
const char kSmall[] = R"("batch": 8, "m": 2, "cfg": 2.0)";
const Stage kTune{"tune", "tune",
                  std::string(R"({"steps": 4, "head_steps": 2, "pool": 20, "head_width": 16, )") + kSmall + "}"};
const Stage kDistill{"distill", "distill", std::string(R"({"steps": 4, "k": 2, )") + kSmall + "}"};

INSTANTIATE_TEST_SUITE_P(
    JobTypes, ResumeTest,
    ::testing::Values(
        Case{"tokenizer", {},
             {"tokenizer", "job",
              R"({"steps": 60, "checkpoint_every": 30, "batch": 16, "channels": 16, "codebook_size": 32, "train_limit": 512, "restart_every": 10})"}},
        Case{"teacher", {kTokenizer},
             {"teacher", "job", R"({"steps": 60, "checkpoint_every": 30, "batch": 16, "width": 16, "heads": 2, "train_limit": 256})"}},
        Case{"featurenet", {},
             {"featurenet", "job", R"({"steps": 60, "checkpoint_every": 30, "batch": 32, "train_limit": 512})"}},
        Case{"tune", {kTokenizer, kTeacher},
             {"tune", "job", std::string(R"({"steps": 30, "head_steps": 10, "checkpoint_every": 15, "pool": 20, "head_width": 16, )") + kSmall + "}"}},
        Case{"distill", {kTokenizer, kTeacher, kTune},
             {"distill", "job", std::string(R"({"steps": 16, "k": 2, "warmup": 8, "checkpoint_every": 8, )") + kSmall + "}"}},
        Case{"align", {kTokenizer, kTeacher, kTune, kDistill},
             {"align", "job", std::string(R"({"steps": 30, "checkpoint_every": 15, )") + kSmall + "}"}}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace dd2
