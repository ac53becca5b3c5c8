// SLURM-launched workers against real daemons: a private munged, slurmctld and slurmd started by
// tests/slurm/slurm-cluster.sh for this suite (it fails, printing their logs, where they cannot
// start; it does not skip). Workers are the CPU variant of the sbatch template, srun tasks of
// real allocations; the coordinator is the real one, started by dd2ctl up without workers.
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include <gmock/gmock.h>

#include "tests/integration/cluster_fixture.h"

namespace dd2 {
namespace {

class SlurmTest : public ClusterTest {
 protected:
  static void SetUpTestSuite() {
    slurm_ = new testing::TempDir();
    auto r = testing::RunCommand({kSrc + "/tests/slurm/slurm-cluster.sh", "up", slurm_->path() + "/slurm", "8"});
    started_ = r.exit_code == 0;
    if (!started_) {
      std::fprintf(stderr, "SLURM did not start:\n%s%s\n", r.out.c_str(), r.err.c_str());
      return;
    }
    ::setenv("SLURM_CONF", (slurm_->path() + "/slurm/slurm.conf").c_str(), 1);
  }

  static void TearDownTestSuite() {
    testing::RunCommand({kSrc + "/tests/slurm/slurm-cluster.sh", "down", slurm_->path() + "/slurm"});
    delete slurm_;
    slurm_ = nullptr;
  }

  void SetUp() override {
    ClusterTest::SetUp();
    ASSERT_TRUE(started_) << "the test SLURM cluster did not start (its logs are above)";
  }

  void TearDown() override {
    // Every allocation of the private cluster goes, so the next test starts with free CPUs.
    testing::RunCommand({"/usr/bin/scancel", "--user", "root"});
    WaitFor([] { return testing::RunCommand({"/usr/bin/squeue", "-h"}).out.empty(); }, 30);
    ClusterTest::TearDown();
  }

  void UpCoordinator(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"up", "--workers", "0", "--heartbeat-ms", "200", "--lost-after-ms", "3000",
                                     "--retry-backoff-ms", "100"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = Ctl(args);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }

  // dd2ctl slurm launch (CPU variant): the allocation's SLURM job id.
  std::string Launch(int workers) {
    Json j = CtlJson({"slurm", "launch", "--nodes", "1", "--gpus-per-node", std::to_string(workers), "--device", "cpu",
                      "--threads", "1"});
    return j.value("slurm_job_id", "");
  }

  std::vector<Json> SlurmWorkers(const std::string& job) {
    std::vector<Json> out;
    const Json doc = CtlJson({"workers"});
    for (const auto& w : doc["workers"]) {
      if (w["slurm"].is_object() && w["slurm"]["job_id"] == job) out.push_back(w);
    }
    return out;
  }

  Json Allocation(const std::string& job) {
    const Json doc = CtlJson({"slurm", "ls"});
    for (const auto& a : doc["allocations"]) {
      if (a["slurm_job_id"] == job) return a;
    }
    return Json();
  }

  // Submits run NAME of one 6 s sleep job `s` (retries 0, a checkpoint every 10 steps) and
  // returns its run id once the job is running.
  std::string SubmitRunningSleep(const std::string& name) {
    const std::string run = SubmitJson(WriteYaml(name + ".yaml", "name: " + name + "\njobs:\n"
        "  - {name: s, type: sleep, retries: 0, params: {seconds: 6, steps: 60, checkpoint_every: 10}}\n"));
    EXPECT_TRUE(WaitFor([&] { return Step(run + "/s") >= 3; }, 60)) << Ctl({"jobs", run}).out;
    return run;
  }

  int64_t Step(const std::string& job) {
    auto step = Sql("SELECT step FROM jobs WHERE id = '" + job + "'");
    return step.empty() ? 0 : std::stoll(step[0]);
  }

  // The end of slurmctld's and slurmd's logs, for failure messages.
  static std::string DaemonLogs() {
    std::string out;
    for (const char* log : {"slurmctld.log", "slurmd.log"}) {
      auto r = testing::RunCommand({"/usr/bin/tail", "-n", "25", slurm_->path() + "/slurm/" + log});
      out += "\n===== " + std::string(log) + "\n" + r.out;
    }
    return out;
  }

  static testing::TempDir* slurm_;
  static bool started_;
};

testing::TempDir* SlurmTest::slurm_ = nullptr;
bool SlurmTest::started_ = false;

std::string ShortHostname() {
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  std::string h(host);
  return h.substr(0, h.find('.'));
}

TEST_F(SlurmTest, LaunchedWorkersRunAPipelineAndReportTheirTasks) {
  UpCoordinator();
  const std::string job = Launch(2);
  ASSERT_FALSE(job.empty());
  const std::string run = SubmitJson(WriteYaml("p.yaml", R"(
name: onslurm
jobs:
  - {name: prepare, type: sleep, params: {seconds: 0.5, steps: 5}}
  - {name: net, type: featurenet, after: [prepare], params: {steps: 30, batch: 8, train_limit: 256}}
  - {name: side, type: sleep, after: [prepare], params: {seconds: 1, steps: 5}}
  - {name: done, type: sleep, after: [net, side], params: {seconds: 0.2, steps: 2}}
)"));
  ASSERT_TRUE(WaitFor([&] { return RunState(run) == "succeeded"; }, 180)) << Ctl({"jobs", run}).out;
  // Both workers registered with their SLURM task.
  auto workers = SlurmWorkers(job);
  ASSERT_EQ(workers.size(), 2u);
  std::set<int64_t> procids, localids;
  for (const auto& w : workers) {
    procids.insert(w["slurm"]["procid"].get<int64_t>());
    localids.insert(w["slurm"]["localid"].get<int64_t>());
    EXPECT_EQ(w["slurm"]["restart_count"], 0);
    EXPECT_EQ(w["slurm"]["node"], ShortHostname());
    EXPECT_EQ(w["id"], "slurm-" + job + "-" + std::to_string(w["slurm"]["procid"].get<int64_t>()));
  }
  EXPECT_EQ(procids, (std::set<int64_t>{0, 1}));
  EXPECT_EQ(localids, (std::set<int64_t>{0, 1}));
  // Every attempt ran on them.
  for (const auto& w : Sql("SELECT worker_ids FROM attempts")) EXPECT_THAT(w, ::testing::StartsWith("slurm-" + job + "-"));
  // slurm ls: the allocation, SLURM's state and its workers.
  ASSERT_TRUE(WaitFor([&] { return Allocation(job).value("state", "") == "RUNNING"; }, 30)) << Allocation(job).dump();
  Json a = Allocation(job);
  EXPECT_EQ(a["origin"], "launch");
  EXPECT_EQ(a["nodes"], 1);
  EXPECT_EQ(a["workers_per_node"], 2);
  EXPECT_EQ(a["workers"].size(), 2u);
  EXPECT_THAT(Ctl({"slurm", "ls"}).out, ::testing::HasSubstr(job));
  EXPECT_THAT(Ctl({"workers"}).out, ::testing::HasSubstr(job + "/1/1/0@"));
}

TEST_F(SlurmTest, DryRunPrintsAScriptSbatchTakesAndSlurmErrorsAreNamed) {
  UpCoordinator();
  auto dry = Ctl({"slurm", "launch", "--nodes", "1", "--gpus-per-node", "1", "--device", "cpu", "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_THAT(dry.out, ::testing::HasSubstr("#SBATCH --signal=B:USR1@120"));
  const std::string script = WriteYaml("workers.sbatch", dry.out);
  std::filesystem::create_directories(home_ + "/slurm");
  auto sb = testing::RunCommand({"/usr/bin/sbatch", "--parsable", script});
  ASSERT_EQ(sb.exit_code, 0) << sb.err;
  const std::string job = sb.out.substr(0, sb.out.find_first_of(";\n"));
  ASSERT_TRUE(WaitFor([&] { return SlurmWorkers(job).size() == 1; }, 60)) << "the dry-run script's worker registers";
  EXPECT_TRUE(Sql("SELECT id FROM slurm_allocations").empty()) << "a dry run records nothing";

  auto partition = Ctl({"slurm", "launch", "--device", "cpu", "--partition", "nope"});
  EXPECT_EQ(partition.exit_code, 1);
  EXPECT_THAT(partition.err, ::testing::HasSubstr("sbatch failed"));
  EXPECT_THAT(partition.err, ::testing::HasSubstr("invalid partition"));
  auto no_sbatch = testing::RunCommand({kBin + "/dd2ctl", "--home", home_, "slurm", "launch", "--device", "cpu"},
                                       {"PATH=" + dir_.path() + "/empty-path"});
  EXPECT_EQ(no_sbatch.exit_code, 1);
  EXPECT_THAT(no_sbatch.err, ::testing::HasSubstr("sbatch: cannot run it"));
  auto bad = Ctl({"slurm", "launch", "--device", "cpu", "--sbatch-arg", "qos=high"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, ::testing::HasSubstr("not an sbatch option"));
  EXPECT_EQ(Ctl({"slurm", "cancel", "alloc-99"}).exit_code, 3);
}

TEST_F(SlurmTest, ScancelEndsAttemptsAsSlurmCancelledAndANewAllocationFinishesTheRun) {
  UpCoordinator();
  const std::string first = Launch(1);
  const std::string run = SubmitRunningSleep("long");
  auto cancel = Ctl({"slurm", "cancel", "alloc-1"});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  ASSERT_TRUE(WaitFor([&] {
    return Sql("SELECT state || ': ' || cause FROM attempts WHERE id = 'long-1/s#1'") ==
           std::vector<std::string>{"lost: slurm cancelled"};
  }, 60)) << Ctl({"jobs", run}).out;
  const std::string second = Launch(1);
  ASSERT_TRUE(WaitFor([&] { return RunState(run) == "succeeded"; }, 120)) << Ctl({"jobs", run}).out;
  EXPECT_EQ(Sql("SELECT worker_ids FROM attempts WHERE job_id = 'long-1/s' ORDER BY number DESC LIMIT 1"),
            std::vector<std::string>{"slurm-" + second + "-0"});
  ASSERT_TRUE(WaitFor([&] { return Allocation(first).value("state", "") == "CANCELLED"; }, 30))
      << Allocation(first).dump();
}

TEST_F(SlurmTest, Usr1GraceSignalCheckpointsHandsBackEndsTheAllocationAndTheNextAttemptResumes) {
  UpCoordinator();
  const std::string job = Launch(2);
  ASSERT_TRUE(WaitFor([&] { return SlurmWorkers(job).size() == 2; }, 60));
  const std::string run = SubmitJson(WriteYaml("net.yaml", R"(
name: grace
jobs:
  - {name: net, type: featurenet, retries: 0,
     params: {steps: 1000, checkpoint_every: 400, batch: 8, train_limit: 256}}
)"));
  const std::string net = "grace-1/net";
  ASSERT_TRUE(WaitFor([&] { return Step(net) >= 20; }, 120));
  // What SLURM sends before a time limit or a preemption (--signal=B:USR1@grace): the whole
  // allocation is ending, so every worker of it hands its job back and exits.
  auto sig = testing::RunCommand({"/usr/bin/scancel", "--signal=USR1", "--batch", job});
  ASSERT_EQ(sig.exit_code, 0) << sig.err;
  ASSERT_TRUE(WaitFor([&] { return !Sql("SELECT state FROM attempts WHERE id = '" + net + "#1' AND state = 'preempted'").empty(); },
                      60)) << Ctl({"jobs", run}).out;
  ASSERT_TRUE(WaitFor([&] { return Allocation(job).value("state", "") == "COMPLETED"; }, 60))
      << "its workers exited, so the allocation ended: " << Allocation(job).dump();
  const std::string next = Launch(1);
  ASSERT_TRUE(WaitFor([&] { return RunState(run) == "succeeded"; }, 240)) << Ctl({"jobs", run}).out;
  EXPECT_EQ(Sql("SELECT state || ': ' || cause FROM attempts WHERE id = '" + net + "#1'"),
            std::vector<std::string>{"preempted: slurm preempted"});
  const auto at = Sql("SELECT step FROM checkpoints WHERE attempt_id = '" + net + "#1'");
  ASSERT_EQ(at.size(), 1u) << "the checkpoint written at the signal";
  EXPECT_NE(std::stoll(at[0]) % 400, 0) << "written at once, not at the next interval";
  // The attempt that finished resumed from that checkpoint on the new allocation. (An attempt in
  // between can only be one a stopping worker was offered and handed back at once.)
  const auto last = Sql("SELECT id FROM attempts WHERE job_id = '" + net + "' ORDER BY number DESC LIMIT 1");
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(Sql("SELECT detail FROM events WHERE kind = 'attempt_resumed' AND attempt_id = '" + last[0] + "'"),
            std::vector<std::string>{"step " + at[0]});
  EXPECT_EQ(Sql("SELECT worker_ids FROM attempts WHERE id = '" + last[0] + "'"),
            std::vector<std::string>{"slurm-" + next + "-0"});
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM attempts WHERE job_id = '" + net + "' AND number > 1 AND id != '" + last[0] +
                "' AND cause != 'worker shutting down'"),
            std::vector<std::string>{"0"});
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM events WHERE kind = 'job_retrying'"), std::vector<std::string>{"0"});
}

TEST_F(SlurmTest, RequeuedAllocationsWorkersRegisterAgainAndFinishTheRun) {
  UpCoordinator();
  const std::string job = Launch(1);
  const std::string run = SubmitRunningSleep("rq");
  auto rq = testing::RunCommand({"/usr/bin/scontrol", "requeue", job});
  ASSERT_EQ(rq.exit_code, 0) << rq.err;
  // SLURM holds a requeued job back until the old run's credential expires (BeginTime; 10 s on
  // the test cluster, cred_expire=10). Releasing it earlier gets it killed: "Job credential revoked".
  ASSERT_TRUE(WaitFor([&] {
    return SlurmWorkers(job).size() == 1 && SlurmWorkers(job)[0]["slurm"]["restart_count"] == 1;
  }, 90)) << "the requeued allocation's worker comes back with SLURM_RESTART_COUNT 1; SLURM says: "
           << testing::RunCommand({"/usr/bin/scontrol", "show", "job", job}).out
           << ReadFile(home_ + "/slurm/dd2-workers-" + job + ".out").value_or("(no log)") << DaemonLogs();
  ASSERT_TRUE(WaitFor([&] { return RunState(run) == "succeeded"; }, 120)) << Ctl({"jobs", run}).out;
  EXPECT_EQ(Sql("SELECT state || ': ' || cause FROM attempts WHERE id = 'rq-1/s#1'"),
            std::vector<std::string>{"preempted: slurm preempted (requeued)"});
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM events WHERE kind = 'job_retrying'"), std::vector<std::string>{"0"});
  ASSERT_TRUE(WaitFor([&] { return Allocation(job).value("restarts", 0) == 1; }, 30)) << Allocation(job).dump();
}

TEST_F(SlurmTest, AutoscalerStartsWorkersForWaitingJobsOnceAcrossARestartAndTheAllocationEnds) {
  // sbatch through a wrapper that counts its calls.
  const std::string bin = dir_.path() + "/wrap";
  std::filesystem::create_directories(bin);
  const std::string calls = dir_.path() + "/sbatch-calls";
  std::ofstream(bin + "/sbatch") << "#!/bin/sh\necho call >> " << calls << "\nexec /usr/bin/sbatch \"$@\"\n";
  std::filesystem::permissions(bin + "/sbatch", std::filesystem::perms::owner_all);
  const std::string old_path = std::getenv("PATH");
  ::setenv("PATH", (bin + ":" + old_path).c_str(), 1);
  const std::string settings = WriteYaml("autoscale.yaml",
                                         "device: cpu\ngpus_per_node: 1\nwait_s: 1\nidle_timeout_s: 4\npoll_s: 1\n"
                                         "threads: 1\nmax_allocations: 2\n");
  UpCoordinator({"--slurm-autoscale", settings});
  const std::string run = SubmitJson(WriteYaml("a.yaml", R"(
name: auto
jobs:
  - {name: s, type: sleep, params: {seconds: 4, steps: 40}}
)"));
  ASSERT_TRUE(WaitFor([&] { return !Sql("SELECT slurm_job_id FROM slurm_allocations WHERE slurm_job_id != ''").empty(); },
                      60));
  // kill -9 the coordinator while the allocation is pending or starting, and start it again.
  KillCoordinator();  // and wait until it is gone: `up` would take a dying one for alive
  UpCoordinator({"--slurm-autoscale", settings});
  ASSERT_TRUE(WaitFor([&] { return RunState(run) == "succeeded"; }, 120)) << Ctl({"jobs", run}).out;
  const auto job = Sql("SELECT slurm_job_id FROM slurm_allocations");
  ASSERT_EQ(job.size(), 1u);
  // The idle worker exits after 4 s, so its allocation ends.
  ASSERT_TRUE(WaitFor([&] {
    const std::string state = Allocation(job[0]).value("state", "");
    return state == "COMPLETED" || state == "ended";
  }, 60)) << Allocation(job[0]).dump();
  ::setenv("PATH", old_path.c_str(), 1);
  auto text = ReadFile(calls);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(std::count(text->begin(), text->end(), '\n'), 1) << "sbatch ran once, across the restart";
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM events WHERE kind = 'autoscale_submit'"), std::vector<std::string>{"1"});
  EXPECT_EQ(Sql("SELECT origin FROM slurm_allocations"), std::vector<std::string>{"autoscale"});
}

}  // namespace
}  // namespace dd2
