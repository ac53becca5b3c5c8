// The pure SLURM helpers: scontrol parsing, durations, the sbatch script, transient errors and
// retries (with a fake SlurmCommands), the task environment and the causes of an ending.
#include "common/slurm.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <deque>

namespace dd2 {
namespace {

// What `scontrol show job -o` printed on our test cluster at a time limit (cut).
constexpr char kTimeLimitLine[] =
    "JobId=6 JobName=t.sh UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901754 Nice=0 "
    "Account=(null) QOS=(null) JobState=COMPLETING Reason=TimeLimit Dependency=(null) Requeue=1 Restarts=0 "
    "BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:01:18 TimeLimit=00:01:00 TimeMin=N/A\n";

TEST(SlurmHelpersTest, ParsesScontrolJobLines) {
  const std::string text = std::string(kTimeLimitLine) +
                           "JobId=7 JobName=dd2-alloc-2 JobState=RUNNING Reason=None Restarts=1 RunTime=1-02:03:04 "
                           "TimeLimit=UNLIMITED\n"
                           "garbage without fields\n";
  auto jobs = ParseScontrolJobs(text);
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs["6"], (SlurmJobInfo{"t.sh", "COMPLETING", "TimeLimit", 0, 78, 60}));
  EXPECT_EQ(jobs["7"], (SlurmJobInfo{"dd2-alloc-2", "RUNNING", "None", 1, 93784, -1}));
}

TEST(SlurmHelpersTest, ParsesEveryDurationForm) {
  EXPECT_EQ(ParseSlurmDuration("5"), 300);
  EXPECT_EQ(ParseSlurmDuration("5:30"), 330);
  EXPECT_EQ(ParseSlurmDuration("01:02:03"), 3723);
  EXPECT_EQ(ParseSlurmDuration("2-03"), (2 * 24 + 3) * 3600);
  EXPECT_EQ(ParseSlurmDuration("2-03:04"), (2 * 24 + 3) * 3600 + 240);
  EXPECT_EQ(ParseSlurmDuration("2-03:04:05"), (2 * 24 + 3) * 3600 + 245);
  EXPECT_EQ(ParseSlurmDuration("UNLIMITED"), -1);
  EXPECT_EQ(ParseSlurmDuration("soon"), std::nullopt);
  EXPECT_EQ(ParseSlurmDuration("1:2:3:4"), std::nullopt);
}

SlurmLaunchSpec Spec() {
  SlurmLaunchSpec s;
  s.nodes = 2;
  s.workers_per_node = 4;
  s.coordinator = "tcp://10.0.0.1:5555";
  s.home = "/shared/dd2";
  s.worker_binary = "/opt/dd2/bin/dd2-worker";
  return s;
}

TEST(SlurmHelpersTest, RendersOneWorkerPerGpuWithTheGraceSignalAndRequeue) {
  SlurmLaunchSpec s = Spec();
  s.partition = "gpu";
  s.time_limit = "4:00:00";
  s.account = "lab";
  s.sbatch_args = {"--qos=high"};
  s.grace_s = 90;
  ASSERT_TRUE(ValidateLaunchSpec(s).ok());
  const std::string script = RenderSbatchScript(s);
  for (const char* line : {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                           "#SBATCH --signal=B:USR1@90", "#SBATCH --requeue", "#SBATCH --partition=gpu",
                           "#SBATCH --time=4:00:00", "#SBATCH --account=lab", "#SBATCH --qos=high",
                           "#SBATCH --output=/shared/dd2/slurm/%x-%j.out", "srun --kill-on-bad-exit=0 /opt/dd2/bin/dd2-worker --slurm",
                           "--coordinator 'tcp://10.0.0.1:5555' --home '/shared/dd2' --device cuda",
                           "--slurm-grace-s 90", "trap 'kill -USR1 $workers 2>/dev/null' USR1"}) {
    EXPECT_THAT(script, ::testing::HasSubstr(line));
  }
  EXPECT_THAT(script, ::testing::Not(::testing::HasSubstr("{{")));
  s.device = "cpu";
  EXPECT_THAT(RenderSbatchScript(s), ::testing::Not(::testing::HasSubstr("--gpus-per-node")));
  EXPECT_THAT(RenderSbatchScript(s), ::testing::HasSubstr("--device cpu"));
}

TEST(SlurmHelpersTest, RefusesValuesThatWouldBreakTheScript) {
  SlurmLaunchSpec s = Spec();
  s.partition = "gpu'; rm -rf /";
  EXPECT_THAT(std::string(ValidateLaunchSpec(s).message()), ::testing::HasSubstr("--partition"));
  s = Spec();
  s.sbatch_args = {"qos=high"};
  EXPECT_THAT(std::string(ValidateLaunchSpec(s).message()), ::testing::HasSubstr("not an sbatch option"));
  s = Spec();
  s.home = "relative/home";
  EXPECT_THAT(std::string(ValidateLaunchSpec(s).message()), ::testing::HasSubstr("absolute"));
  s = Spec();
  s.workers_per_node = 0;
  EXPECT_FALSE(ValidateLaunchSpec(s).ok());
}

TEST(SlurmHelpersTest, KnowsTransientSbatchErrors) {
  EXPECT_TRUE(IsTransientSbatchError("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"));
  EXPECT_TRUE(IsTransientSbatchError("sbatch: error: Resource temporarily unavailable"));
  EXPECT_TRUE(IsTransientSbatchError("sbatch: error: Unable to contact slurm controller (connect failure)"));
  EXPECT_FALSE(IsTransientSbatchError("sbatch: error: invalid partition specified: nope"));
  EXPECT_FALSE(IsTransientSbatchError("sbatch: error: Batch job submission failed: Invalid account"));
}

class FakeSlurm : public SlurmCommands {
 public:
  std::deque<absl::StatusOr<std::string>> answers;
  int submits = 0;
  absl::StatusOr<std::string> Submit(const std::string&) override {
    ++submits;
    auto a = answers.front();
    answers.pop_front();
    return a;
  }
  absl::StatusOr<std::map<std::string, SlurmJobInfo>> Query(const std::string&) override { return std::map<std::string, SlurmJobInfo>{}; }
  absl::StatusOr<std::string> FinalState(const std::string&) override { return absl::NotFoundError("no sacct"); }
  absl::Status Cancel(const std::string&) override { return absl::OkStatus(); }
};

TEST(SlurmHelpersTest, SubmitRetriesTransientErrorsWithDoublingBackoff) {
  FakeSlurm slurm;
  slurm.answers = {absl::UnavailableError("sbatch: Socket timed out"),
                   absl::UnavailableError("sbatch: Resource temporarily unavailable"), std::string("42")};
  std::vector<int64_t> slept;
  std::vector<std::string> heard;
  auto id = SubmitWithRetry(slurm, "#!/bin/bash\n", 5, 1000, [&](int64_t ms) { slept.push_back(ms); },
                            [&](const std::string& why) { heard.push_back(why); });
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "42");
  EXPECT_EQ(slept, (std::vector<int64_t>{1000, 2000}));
  ASSERT_EQ(heard.size(), 2u);
  EXPECT_THAT(heard[0], ::testing::HasSubstr("Socket timed out; retrying in 1000 ms"));
}

TEST(SlurmHelpersTest, SubmitGivesUpAtOnceOnAPermanentErrorAndAfterTheLastAttempt) {
  FakeSlurm slurm;
  slurm.answers = {absl::UnavailableError("sbatch: error: invalid partition specified: nope")};
  auto id = SubmitWithRetry(slurm, "", 5, 1000, [](int64_t) {});
  EXPECT_THAT(std::string(id.status().message()), ::testing::HasSubstr("invalid partition"));
  EXPECT_EQ(slurm.submits, 1);
  slurm.answers = {absl::UnavailableError("busy"), absl::UnavailableError("busy")};
  slurm.submits = 0;
  EXPECT_FALSE(SubmitWithRetry(slurm, "", 2, 10, [](int64_t) {}).ok());
  EXPECT_EQ(slurm.submits, 2);
}

TEST(SlurmHelpersTest, ReadsTheTaskEnvironmentAndPicksItsGpu) {
  std::map<std::string, std::string> env = {{"SLURM_JOB_ID", "77"}, {"SLURM_PROCID", "5"}, {"SLURM_LOCALID", "1"},
                                            {"SLURM_RESTART_COUNT", "2"}, {"SLURMD_NODENAME", "gpu07"}};
  auto get = [&](const char* k) -> const char* {
    auto it = env.find(k);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  proto::SlurmTask t = SlurmTaskFromEnv(get);
  EXPECT_EQ(t.job_id(), "77");
  EXPECT_EQ(t.procid(), 5);
  EXPECT_EQ(t.localid(), 1);
  EXPECT_EQ(t.restart_count(), 2);
  EXPECT_EQ(t.node(), "gpu07");
  EXPECT_EQ(SlurmDeviceIndex(t, "0,1,2,3"), 1);  // every GPU of the node visible: by local rank
  EXPECT_EQ(SlurmDeviceIndex(t, "3"), 0);        // SLURM bound one GPU to the task
  EXPECT_EQ(SlurmDeviceIndex(t, nullptr), 1);
  env.clear();
  EXPECT_EQ(SlurmTaskFromEnv(get).job_id(), "");
}

TEST(SlurmHelpersTest, ClassifiesWhySlurmEndsAnAllocation) {
  auto info = [](std::string state, std::string reason, int restarts = 0, int64_t run = 0, int64_t limit = -1) {
    return std::optional<SlurmJobInfo>(SlurmJobInfo{"dd2", state, reason, restarts, run, limit});
  };
  // SIGTERM: what scontrol says while the job completes.
  EXPECT_EQ(ClassifySlurmEnding(info("COMPLETING", "None"), 0, false, 120).cause, "slurm cancelled");
  EXPECT_FALSE(ClassifySlurmEnding(info("COMPLETING", "None"), 0, false, 120).preempted);
  EXPECT_EQ(ClassifySlurmEnding(info("COMPLETING", "TimeLimit"), 0, false, 120).cause, "slurm timeout");
  EXPECT_TRUE(ClassifySlurmEnding(info("COMPLETING", "TimeLimit"), 0, false, 120).preempted);
  EXPECT_EQ(ClassifySlurmEnding(info("COMPLETING", "None", 1), 0, false, 120).cause, "slurm preempted (requeued)");
  EXPECT_TRUE(ClassifySlurmEnding(info("COMPLETING", "None", 1), 0, false, 120).preempted);
  EXPECT_EQ(ClassifySlurmEnding(info("PREEMPTED", "None"), 0, false, 120).cause, "slurm preempted");
  EXPECT_EQ(ClassifySlurmEnding(info("NODE_FAIL", "NodeDown"), 0, false, 120).cause, "slurm node fail");
  EXPECT_FALSE(ClassifySlurmEnding(info("NODE_FAIL", "NodeDown"), 0, false, 120).preempted);
  EXPECT_TRUE(ClassifySlurmEnding(std::nullopt, 0, false, 120).preempted);
  // USR1: near the time limit it announces the timeout, otherwise a preemption.
  EXPECT_EQ(ClassifySlurmEnding(info("RUNNING", "None", 0, 3500, 3600), 0, true, 120).cause, "slurm timeout");
  EXPECT_EQ(ClassifySlurmEnding(info("RUNNING", "None", 0, 100, 3600), 0, true, 120).cause, "slurm preempted");
  EXPECT_EQ(ClassifySlurmEnding(info("RUNNING", "None"), 0, true, 120).cause, "slurm preempted");
  EXPECT_TRUE(ClassifySlurmEnding(info("RUNNING", "None"), 0, true, 120).preempted);
}

}  // namespace
}  // namespace dd2
