// Exact resume, with real processes: each training job type runs once straight through, and
// once in a dd2-train child that is killed with SIGKILL after its mid-run checkpoint appears,
// then resumed by a fresh child. Every tensor of the two final.pt files must be identical.
// Also: a corrupt newest checkpoint is rejected by checksum and the previous one is used.
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/checkpoint_manifest.h"
#include "common/process.h"
#include "tests/testing/test_util.h"
#include "tests/training/train_test_util.h"

namespace dd2 {
namespace {

namespace fs = std::filesystem;
using testing::JobArgs;
using testing::RunToEnd;
using testing::Stage;

bool HasCommittedCheckpoint(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".json") return true;
  }
  return false;
}

// Starts the job, SIGKILLs it once a checkpoint manifest exists in `checkpoints`, and reports
// whether it was killed before finishing (if it finished first, the test cannot show anything).
bool RunAndKillAfterCheckpoint(const std::vector<std::string>& argv, const std::string& checkpoints,
                               const std::string& final_file) {
  pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "w", stdout);
    ExecOrExit(argv);
  }
  while (!HasCommittedCheckpoint(checkpoints) && !fs::exists(final_file)) {
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && !fs::exists(final_file);
}

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
  ASSERT_TRUE(RunAndKillAfterCheckpoint(argv, out + "/checkpoints", out + "/final.pt"))
      << "the job finished before it could be killed; make it longer";
  EXPECT_THAT(RunToEnd(argv), ::testing::HasSubstr("resumed from"));
  const auto pairs = testing::PairTensors(straight + "/" + c.job.job + "/final.pt", out + "/final.pt");
  EXPECT_GT(pairs.size(), 5u);
  for (const auto& p : pairs) EXPECT_TRUE(p.b.defined() && p.a.equal(p.b)) << p.key;
}

// A truncated newest checkpoint is rejected by its checksum; the run resumes from the one
// before and still ends exactly where a straight run does.
TEST(CheckpointCommitTest, CorruptNewestCheckpointFallsBackToThePreviousOne) {
  testing::TempDir dir;
  const std::string params =
      R"({"steps": 6, "checkpoint_every": 2, "batch": 16, "channels": 16, "codebook_size": 32, "train_limit": 256})";
  RunToEnd(JobArgs("featurenet", params, dir.path() + "/straight", "job"));
  const auto argv = JobArgs("featurenet", params, dir.path() + "/cut", "job");
  RunToEnd(argv);
  const std::string ckpts = dir.path() + "/cut/job/checkpoints";
  ASSERT_TRUE(fs::exists(ckpts + "/step-00000004.json"));
  fs::resize_file(ckpts + "/step-00000004.pt", fs::file_size(ckpts + "/step-00000004.pt") / 2);
  const std::string out = RunToEnd(argv);
  EXPECT_THAT(out, ::testing::HasSubstr("checkpoint of step 4 rejected"));
  EXPECT_THAT(out, ::testing::HasSubstr("step-00000002.pt at step 2"));
  for (const auto& p : testing::PairTensors(dir.path() + "/straight/job/final.pt", dir.path() + "/cut/job/final.pt")) {
    EXPECT_TRUE(p.b.defined() && p.a.equal(p.b)) << p.key;
  }
}

// A full disk (a small tmpfs): the job fails with the cause named (not a crash), the checkpoint
// it could not write leaves neither a manifest nor a temp file, what was committed before still
// verifies, and once there is room the job resumes from it.
TEST(CheckpointCommitTest, FullDiskFailsTheJobWithItsCauseAndCommitsNoCorruptCheckpoint) {
  testing::SmallDisk disk(8 << 20);  // room for one 5 MB checkpoint of this job, not two
  if (!disk.ok()) GTEST_SKIP() << disk.why();
  const std::string params = R"({"steps": 6, "checkpoint_every": 2, "batch": 16, "train_limit": 256})";
  const auto argv = JobArgs("featurenet", params, disk.path() + "/run", "job");
  const auto full = testing::RunCommand(argv);
  EXPECT_EQ(full.exit_code, 1) << full.err;
  EXPECT_THAT(full.err, ::testing::HasSubstr("dd2 job: checkpoint of step 4: cannot write"));
  EXPECT_THAT(full.err, ::testing::HasSubstr("No space left on device"));
  const std::string ckpts = disk.path() + "/run/job/checkpoints";
  EXPECT_THAT(testing::SortedFiles(ckpts),
              ::testing::ElementsAre(ckpts + "/step-00000002.json", ckpts + "/step-00000002.pt"))
      << "no manifest, no temp file of the failed write";
  const auto committed = ListCheckpoints(ckpts);
  ASSERT_EQ(committed.size(), 1u);
  EXPECT_TRUE(VerifyCheckpoint(committed[0]).ok());
  ASSERT_EQ(::mount("tmpfs", disk.path().c_str(), "tmpfs", MS_REMOUNT, "size=64m"), 0) << std::strerror(errno);
  EXPECT_THAT(RunToEnd(argv), ::testing::HasSubstr("step-00000002.pt at step 2"));
  EXPECT_TRUE(fs::exists(disk.path() + "/run/job/final.pt"));
}

using testing::kTinyDd2;
using testing::TinyDistill;
using testing::TinyTeacher;
using testing::TinyTokenizer;
using testing::TinyTune;

INSTANTIATE_TEST_SUITE_P(
    JobTypes, ResumeTest,
    ::testing::Values(
        Case{"tokenizer", {},
             {"tokenizer", "job",
              R"({"steps": 60, "checkpoint_every": 30, "batch": 16, "channels": 16, "codebook_size": 32, "train_limit": 512, "restart_every": 10})"}},
        Case{"teacher", {TinyTokenizer()},
             {"teacher", "job", R"({"steps": 60, "checkpoint_every": 30, "batch": 16, "width": 16, "heads": 2, "train_limit": 256})"}},
        Case{"featurenet", {},
             {"featurenet", "job", R"({"steps": 60, "checkpoint_every": 30, "batch": 32, "train_limit": 512})"}},
        Case{"tune", {TinyTokenizer(), TinyTeacher()},
             {"tune", "job", std::string(R"({"steps": 30, "head_steps": 10, "checkpoint_every": 15, "pool": 20, "head_width": 16, )") + kTinyDd2 + "}"}},
        Case{"distill", {TinyTokenizer(), TinyTeacher(), TinyTune()},
             {"distill", "job", std::string(R"({"steps": 16, "k": 2, "warmup": 8, "checkpoint_every": 8, )") + kTinyDd2 + "}"}},
        Case{"align", {TinyTokenizer(), TinyTeacher(), TinyTune(), TinyDistill()},
             {"align", "job", std::string(R"({"steps": 30, "checkpoint_every": 15, )") + kTinyDd2 + "}"}}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace dd2
