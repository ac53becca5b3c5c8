// End-to-end tests of the real binaries: dd2ctl up starts dd2-coordinator and dd2-worker
// processes on 127.0.0.1 with a SQLite file in a temporary home; the tests submit runs, kill
// processes with SIGKILL and read the results through dd2ctl --json and the SQLite file.
// Waits poll for a condition with a generous deadline; none sleeps to make a timeout happen
// (the coordinator's own liveness timeouts are set short through `dd2ctl up`).
#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <regex>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "absl/strings/str_join.h"
#include "common/checkpoint_manifest.h"
#include "common/home.h"
#include "common/protocol.h"
#include "tests/integration/cluster_fixture.h"
#include "tests/testing/test_util.h"

namespace dd2 {
namespace {

using testing::RunCommand;


TEST_F(ClusterTest, SmokePipelineSucceedsEndToEnd) {
  Up(2);
  auto r = Ctl({"submit", kSrc + "/examples/smoke.yaml", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("submitted run (\\S+)")));
  const std::string run = m[1];
  Json st = CtlJson({"status", run});
  EXPECT_EQ(st["run"]["state"], "succeeded");
  ASSERT_EQ(st["run"]["jobs"].size(), 4u);
  for (const auto& j : st["run"]["jobs"]) {
    EXPECT_EQ(j["state"], "succeeded") << j.dump();
    EXPECT_EQ(j["step"], j["total"]);
    EXPECT_TRUE(j["metrics"].contains("loss"));
  }
  auto logs = Ctl({"logs", run + "/merge"});
  EXPECT_EQ(logs.exit_code, 0);
  EXPECT_THAT(logs.out, ::testing::HasSubstr("sleep: step 5/5"));
  EXPECT_EQ(Ctl({"logs", run + "/nope"}).exit_code, 3);
  EXPECT_EQ(Ctl({"status", "nope-1"}).exit_code, 3);
}

TEST_F(ClusterTest, KilledWorkerJobIsRetriedOnAnotherWorker) {
  Up(2);
  const std::string run = SubmitJson(WriteYaml("long.yaml", R"(
name: long
jobs:
  - {name: work, type: sleep, params: {seconds: 3, steps: 30}}
)"));
  ASSERT_FALSE(run.empty());
  std::string victim;
  ASSERT_TRUE(WaitFor([&] {
    Json jobs = CtlJson({"jobs", run});
    const Json& att = jobs["jobs"][0]["attempts_detail"];
    if (att.empty() || jobs["jobs"][0]["state"] != "running") return false;
    victim = att[0]["workers"][0];
    return true;
  }));
  const int pid = Pid(home_ + "/workers/" + victim + "/pid");
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] { return RunState(run) == "succeeded"; })) << RunState(run);
  Json jobs = CtlJson({"jobs", run});
  const Json& att = jobs["jobs"][0]["attempts_detail"];
  ASSERT_EQ(att.size(), 2u) << jobs.dump();
  EXPECT_EQ(att[0]["state"], "lost");
  EXPECT_EQ(att[0]["cause"], "worker lost");
  EXPECT_NE(att[1]["workers"][0], victim);
  EXPECT_EQ(att[1]["state"], "succeeded");
}

TEST_F(ClusterTest, KilledCoordinatorRestartsAndNoJobCompletesTwice) {
  Up(2);
  const std::string run = SubmitJson(WriteYaml("chain.yaml", R"(
name: chain
jobs:
  - {name: a, type: sleep, params: {seconds: 1, steps: 10}}
  - {name: b, type: sleep, params: {seconds: 1.5, steps: 15}, after: [a]}
  - {name: c, type: sleep, params: {seconds: 1.5, steps: 15}, after: [a]}
  - {name: d, type: sleep, params: {seconds: 1, steps: 10}, after: [b, c]}
)"));
  ASSERT_FALSE(run.empty());
  ASSERT_TRUE(WaitFor([&] {
    Json st = CtlJson({"status", run});
    return st["run"]["jobs"][1]["state"] == "running";
  }));
  const int pid = Pid(home_ + "/coordinator.pid");
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] { return ::kill(pid, 0) != 0; }, 10));
  Up(2);  // restarts the coordinator on the same home; the workers are still running
  ASSERT_TRUE(WaitFor([&] { return RunState(run) == "succeeded"; })) << RunState(run);
  auto completions = Sql("SELECT job_id FROM events WHERE kind = 'job_succeeded' ORDER BY job_id");
  EXPECT_EQ(completions, (std::vector<std::string>{run + "/a", run + "/b", run + "/c", run + "/d"}));
  EXPECT_FALSE(Sql("SELECT id FROM events WHERE kind = 'coordinator_started'").size() < 2);
}

TEST_F(ClusterTest, CheckpointsCommittedWhileTheCoordinatorIsDownAreRecordedAfterItsRestart) {
  Up(1);
  const std::string run = SubmitJson(WriteYaml("ckpt.yaml", R"(
name: ckpt
jobs:
  - {name: a, type: sleep, params: {seconds: 3, steps: 30, checkpoint_every: 5}}
)"));
  ASSERT_FALSE(run.empty());
  ASSERT_TRUE(WaitFor([&] { return CtlJson({"status", run})["run"]["jobs"][0]["state"] == "running"; }));
  const int pid = Pid(home_ + "/coordinator.pid");
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] { return ::kill(pid, 0) != 0; }, 10));
  // The job goes on without a coordinator: its reports of the commits from here on are dropped
  // at the socket, and must be sent again once the coordinator is back.
  const std::string last = CheckpointPath(home_ + "/artifacts/" + run + "/a/checkpoints", 25);
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(ManifestPathFor(last)); }, 30));
  Up(1);
  ASSERT_TRUE(WaitFor([&] { return RunState(run) == "succeeded"; })) << RunState(run);
  ASSERT_TRUE(WaitFor([&] {
    return Sql("SELECT step FROM checkpoints WHERE state = 'committed' ORDER BY step") ==
           std::vector<std::string>{"5", "10", "15", "20", "25"};
  }, 10)) << absl::StrJoin(Sql("SELECT step FROM checkpoints ORDER BY step"), ",");
}

TEST_F(ClusterTest, MalformedRunYamlIsRejectedAndLeavesNothingInTheDatabase) {
  Up(0);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(kSrc + "/tests/data/bad_run_yaml")) {
    const std::string path = e.path().string();
    auto r = Ctl({"submit", path});
    EXPECT_EQ(r.exit_code, 2) << path << ": " << r.err;
    EXPECT_TRUE(std::regex_search(r.err, std::regex(":[0-9]+:[0-9]+: "))) << r.err;
    ++files;
  }
  EXPECT_GE(files, 30);
  EXPECT_TRUE(CtlJson({"status"})["runs"].empty());
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM runs"), std::vector<std::string>{"0"});
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM jobs"), std::vector<std::string>{"0"});
}

TEST_F(ClusterTest, SameSubmissionIdTwiceGivesOneRun) {
  Up(1);
  auto first = CtlJson({"submit", kSrc + "/examples/smoke.yaml", "--id", "fixed-id"});
  auto second = CtlJson({"submit", kSrc + "/examples/smoke.yaml", "--id", "fixed-id"});
  EXPECT_EQ(first["run_id"], second["run_id"]);
  EXPECT_FALSE(first["existed"].get<bool>());
  EXPECT_TRUE(second["existed"].get<bool>());
  EXPECT_EQ(CtlJson({"status"})["runs"].size(), 1u);
  EXPECT_EQ(Ctl({"cancel", first["run_id"]}).exit_code, 0);
}

TEST_F(ClusterTest, CoordinatorSurvivesTenThousandMalformedFrames) {
  Up(1);
  auto endpoint = ReadEndpoint(home_);
  ASSERT_TRUE(endpoint.ok());
  zmq::context_t ctx(1);
  std::vector<zmq::socket_t> sockets;
  for (int i = 0; i < 8; ++i) {
    sockets.emplace_back(ctx, zmq::socket_type::dealer);
    sockets.back().set(zmq::sockopt::linger, 2000);
    sockets.back().connect(*endpoint);
  }
  std::mt19937 rng(42);
  proto::Envelope valid;
  valid.mutable_status();
  const std::string valid_frame = EncodeEnvelope(valid);
  constexpr int kFrames = 10000;
  for (int i = 0; i < kFrames; ++i) {
    zmq::socket_t& s = sockets[i % sockets.size()];
    std::string frame;
    switch (i % 5) {
      case 0: {  // random bytes
        frame.resize(rng() % 512);
        for (char& c : frame) c = static_cast<char>(rng());
        break;
      }
      case 1:  // a valid envelope, truncated
        frame = valid_frame.substr(0, valid_frame.size() - 1 - rng() % (valid_frame.size() - 1));
        break;
      case 2: {  // a well-formed message the coordinator never accepts
        proto::Envelope e;
        e.mutable_assign()->set_attempt_id("x");
        frame = EncodeEnvelope(e);
        break;
      }
      case 3:  // empty frame
        break;
      case 4: {  // three frames where one is expected
        s.send(zmq::buffer(valid_frame), zmq::send_flags::sndmore);
        s.send(zmq::buffer(std::string("junk")), zmq::send_flags::sndmore);
        s.send(zmq::buffer(valid_frame), zmq::send_flags::none);
        continue;
      }
    }
    s.send(zmq::buffer(frame), zmq::send_flags::none);
  }
  int64_t malformed = 0;
  ASSERT_TRUE(WaitFor([&] {
    Json st = CtlJson({"status"});
    if (st.is_discarded()) return false;
    malformed = st["coordinator"]["malformed_frames"];
    return malformed >= kFrames;
  }, 60)) << malformed;
  EXPECT_EQ(malformed, kFrames);
  // Still fully working: a run goes through.
  auto r = Ctl({"submit", WriteYaml("quick.yaml", "name: quick\njobs: [{name: a, type: sleep, params: {seconds: 0.1, steps: 1}}]\n"), "--wait"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST_F(ClusterTest, FailedAttemptIsRetriedAndItsCauseRecorded) {
  Up(1);
  auto r = Ctl({"submit", WriteYaml("flaky.yaml", R"(
name: flaky
jobs:
  - name: a
    type: sleep
    params: {seconds: 0.2, steps: 4, fail_at_step: 2, exit_code: 7, fail_attempts: 1}
    retries: 1
)"), "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json jobs = CtlJson({"jobs", "flaky-1"});
  const Json& att = jobs["jobs"][0]["attempts_detail"];
  ASSERT_EQ(att.size(), 2u);
  EXPECT_EQ(att[0]["state"], "failed");
  EXPECT_EQ(att[0]["exit_code"], 7);
  EXPECT_EQ(att[0]["cause"], "exit code 7");
  EXPECT_EQ(att[1]["state"], "succeeded");
}

TEST_F(ClusterTest, TrainingJobThatCannotStartSaysWhyInItsAttempt) {
  Up(1);
  auto r = Ctl({"submit", WriteYaml("orphan.yaml", "name: orphan\njobs: [{name: t, type: teacher, params: {steps: 1}}]\n"),
                "--wait"});
  EXPECT_NE(r.exit_code, 0);
  Json jobs = CtlJson({"jobs", "orphan-1"});
  const Json& att = jobs["jobs"][0]["attempts_detail"];
  ASSERT_EQ(att.size(), 1u);
  EXPECT_EQ(att[0]["exit_code"], 1);
  EXPECT_THAT(att[0]["cause"].get<std::string>(),
              ::testing::HasSubstr("tokenizer/config.json: missing (did the upstream job succeed?)"));
}

// `dd2ctl up --threads N` sets every job's intra-op threads; a job's `threads` param wins.
TEST_F(ClusterTest, UpThreadsSetsTheIntraOpThreadsOfEveryJob) {
  auto up = Ctl({"up", "--workers", "1", "--threads", "2", "--heartbeat-ms", "200"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  auto r = Ctl({"submit",
                WriteYaml("threads.yaml", "name: threads\njobs:\n"
                                          "  - {name: f, type: featurenet, params: {steps: 2, batch: 8, train_limit: 64}}\n"
                                          "  - {name: g, type: featurenet, params: {steps: 2, batch: 8, train_limit: 64, "
                                          "threads: 1}}\n"),
                "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto logs = Ctl({"logs", "threads-1/f"});
  EXPECT_THAT(logs.out, ::testing::HasSubstr("2 intra-op thread(s)")) << logs.out;
  logs = Ctl({"logs", "threads-1/g"});
  EXPECT_THAT(logs.out, ::testing::HasSubstr("1 intra-op thread(s)")) << logs.out;
}

TEST_F(ClusterTest, CancelStopsARunningJobOnItsWorker) {
  Up(1);
  const std::string run = SubmitJson(WriteYaml("long.yaml", R"(
name: long
jobs:
  - {name: a, type: sleep, params: {seconds: 60, steps: 600}}
  - {name: b, type: sleep, after: [a]}
)"));
  ASSERT_TRUE(WaitFor([&] { return CtlJson({"status", run})["run"]["jobs"][0]["step"].get<int>() > 0; }));
  auto r = Ctl({"cancel", run});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::HasSubstr("cancelled 2 job(s)"));
  ASSERT_TRUE(WaitFor([&] { return RunState(run) == "cancelled"; }, 20)) << RunState(run);
  Json jobs = CtlJson({"jobs", run});
  EXPECT_EQ(jobs["jobs"][0]["attempts_detail"][0]["state"], "cancelled");
  EXPECT_EQ(jobs["jobs"][1]["state"], "cancelled");
  EXPECT_THAT(Ctl({"logs", run + "/a"}).out, ::testing::HasSubstr("stop requested"));
  Json workers = CtlJson({"workers"});
  EXPECT_TRUE(workers["workers"][0]["attempts"].empty());
}

TEST_F(ClusterTest, TinyDd2PipelineRunsThroughWorkersAndReportsEvalMetrics) {
  Up(2);
  auto r = Ctl({"submit", WriteYaml("tiny.yaml", R"(
name: tiny
pipeline: dd2
tokenizer: {steps: 20, batch: 16, channels: 16, codebook_size: 32, train_limit: 512}
featurenet: {steps: 20, batch: 32, train_limit: 512}
teacher: {steps: 20, batch: 16, width: 16, heads: 2, train_limit: 512}
tune: {steps: 6, head_steps: 3, pool: 20, batch: 8, m: 2, head_width: 16}
distill: {steps: 4, k: 2, batch: 8, m: 2, checkpoint_every: 2}
eval_every: {steps: 2, params: {samples: 50, batch: 50}}
align: {steps: 3, batch: 8, m: 2}
distill_after_align: {steps: 3, k: 1, batch: 8, m: 2}
eval: {samples: 50, batch: 50, marginal_samples: 50, euler_steps: 2}
)"), "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json results = CtlJson({"results", "tiny-1"});
  ASSERT_EQ(results["evals"].size(), 7u) << "six pipeline evals and one of distill's checkpoint at step 2";
  EXPECT_EQ(results["evals"][6]["job"], "distill-eval-2");
  for (const auto& e : results["evals"]) {
    EXPECT_EQ(e["state"], "succeeded");
    for (const char* key : {"fid", "inception_score", "precision", "recall", "class_accuracy", "latency_ms_b1",
                            "latency_ms_b256", "speedup_vs_teacher_b1"}) {
      EXPECT_TRUE(e["metrics"].contains(key)) << key;
    }
    EXPECT_TRUE(std::filesystem::exists(e["grid"].get<std::string>())) << e["grid"];
  }
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM metrics WHERE job_id = 'tiny-1/eval-teacher' AND key = 'fid'"),
            std::vector<std::string>{"1"});
  // Recovery shows everything: what status, jobs, results, ckpt ls and logs show, metrics
  // included, is the same after a kill -9 of the coordinator and after down/up.
  auto documents = [&] {
    return std::vector<std::string>{CtlJson({"status", "tiny-1"}).dump(), CtlJson({"status"})["runs"].dump(),
                                    CtlJson({"jobs", "tiny-1"}).dump(), CtlJson({"results", "tiny-1"}).dump(),
                                    CtlJson({"ckpt", "ls", "tiny-1"}).dump(), Ctl({"logs", "tiny-1/distill"}).out,
                                    Ctl({"logs", "tiny-1/eval-dd2"}).out};
  };
  const auto before = documents();
  EXPECT_THAT(before[0], ::testing::HasSubstr("\"fid\""));
  KillCoordinator();
  Up(2);
  const auto after_kill = documents();
  for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(after_kill[i], before[i]) << "document " << i;
  ASSERT_EQ(Ctl({"down"}).exit_code, 0);
  Up(2);
  const auto after_down = documents();
  for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(after_down[i], before[i]) << "document " << i;
}

// Determined's test: the coordinator is killed (kill -9) and stays down 0, 5 and 15 seconds
// while a job runs and others wait; after each restart the queue is what it was (every job in
// the same state, the running attempt reattached, not restarted), and cancel still works.
TEST_F(ClusterTest, QueueSurvivesCoordinatorDowntimesOf0And5And15SecondsAndCancelStillWorks) {
  Up(1);
  const std::string busy = SubmitJson(WriteYaml("busy.yaml", R"(
name: busy
jobs:
  - {name: a, type: sleep, params: {seconds: 120, steps: 1200}}
  - {name: b, type: sleep, after: [a]}
)"));
  const std::string queued = SubmitJson(WriteYaml("queued.yaml", R"(
name: queued
jobs:
  - {name: c, type: sleep, params: {seconds: 1, steps: 2}}
)"));
  ASSERT_TRUE(WaitFor([&] { return CtlJson({"status", busy})["run"]["jobs"][0]["state"] == "running"; }));
  auto queue = [&] {
    std::vector<std::string> rows;
    const Json status = CtlJson({"status"});
    for (const auto& run : status["runs"]) {
      for (const auto& j : run["jobs"]) {
        rows.push_back(run["id"].get<std::string>() + "/" + j["name"].get<std::string>() + " " +
                       j["state"].get<std::string>() + " attempts " + std::to_string(j["attempts"].get<int64_t>()));
      }
    }
    return rows;
  };
  const auto before = queue();
  ASSERT_EQ(before.size(), 3u);
  EXPECT_EQ(before[0], "busy-1/a running attempts 1");
  EXPECT_EQ(before[2], "queued-2/c ready attempts 0");
  for (int downtime_s : {0, 5, 15}) {
    SCOPED_TRACE(downtime_s);
    KillCoordinator();
    std::this_thread::sleep_for(std::chrono::seconds(downtime_s));  // the downtime is the scenario
    Up(1);
    // The worker reconnects and reattaches its attempt.
    ASSERT_TRUE(WaitFor([&] {
      Json w = CtlJson({"workers"});
      return !w["workers"].empty() && w["workers"][0]["state"] == "alive" && !w["workers"][0]["attempts"].empty();
    }, 30));
    EXPECT_EQ(queue(), before);
  }
  EXPECT_EQ(Ctl({"cancel", busy}).exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return RunState(busy) == "cancelled"; })) << RunState(busy);
  ASSERT_TRUE(WaitFor([&] { return RunState(queued) == "succeeded"; })) << RunState(queued);
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM attempts WHERE job_id = 'busy-1/a'"), std::vector<std::string>{"1"});
}

// The 256-token configuration (a 16x16 token grid) through every stage, tiny.
TEST_F(ClusterTest, TinyPipelineOnA16x16TokenGridRunsEveryStage) {
  Up(2);
  auto r = Ctl({"submit", WriteYaml("tiny256.yaml", R"(
name: tiny256
pipeline: dd2
tokenizer: {steps: 10, batch: 16, channels: 16, codebook_size: 32, train_limit: 256, grid: 16}
featurenet: {steps: 10, batch: 32, train_limit: 256}
teacher: {steps: 6, batch: 8, width: 16, heads: 2, train_limit: 256}
tune: {steps: 3, head_steps: 2, pool: 10, batch: 4, m: 2, head_width: 16}
distill: {steps: 3, k: 2, batch: 4, m: 2}
eval: {samples: 20, batch: 20, marginal_samples: 20, euler_steps: 1}
)"), "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto teacher_config = ReadFile(home_ + "/artifacts/tiny256-1/teacher/config.json");
  ASSERT_TRUE(teacher_config.ok());
  EXPECT_EQ(Json::parse(*teacher_config)["tokens"], 256);
  Json results = CtlJson({"results", "tiny256-1"});
  ASSERT_EQ(results["evals"].size(), 6u);
  for (const auto& e : results["evals"]) {
    EXPECT_EQ(e["state"], "succeeded") << e["job"];
    EXPECT_TRUE(e["metrics"].contains("teacher_nll")) << e["job"];
    EXPECT_TRUE(std::filesystem::exists(e["grid"].get<std::string>())) << e["grid"];
  }
}

// The LlamaGen architecture (RMSNorm, SwiGLU, 2D rotary positions, grouped key/value heads),
// trained from scratch as the teacher, through every stage; the generator's backbone is the same.
TEST_F(ClusterTest, TinyLlamaGenArchitecturePipelineRunsEveryStage) {
  Up(2);
  auto r = Ctl({"submit", WriteYaml("tinyllama.yaml", R"(
name: tinyllama
pipeline: dd2
tokenizer: {steps: 10, batch: 16, channels: 16, codebook_size: 32, train_limit: 256}
featurenet: {steps: 10, batch: 32, train_limit: 256}
teacher: {arch: llamagen, steps: 20, batch: 8, width: 16, heads: 2, kv_heads: 1, train_limit: 256}
tune: {steps: 3, head_steps: 2, pool: 10, batch: 4, m: 2, head_width: 16}
distill: {steps: 3, k: 2, batch: 4, m: 2}
eval: {samples: 20, batch: 20, marginal_samples: 20, euler_steps: 1}
)"), "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto teacher_config = ReadFile(home_ + "/artifacts/tinyllama-1/teacher/config.json");
  ASSERT_TRUE(teacher_config.ok());
  EXPECT_EQ(Json::parse(*teacher_config)["arch"], "llamagen");
  auto tune_config = ReadFile(home_ + "/artifacts/tinyllama-1/tune/config.json");
  ASSERT_TRUE(tune_config.ok());
  EXPECT_EQ(Json::parse(*tune_config)["backbone"]["arch"], "llamagen");
  Json results = CtlJson({"results", "tinyllama-1"});
  ASSERT_EQ(results["evals"].size(), 6u);
  for (const auto& e : results["evals"]) {
    EXPECT_EQ(e["state"], "succeeded") << e["job"];
    EXPECT_TRUE(e["metrics"].contains("teacher_nll")) << e["job"];
  }
}

// LlamaGen's own checkpoint files (the tiny fixtures LlamaGen's code wrote): imported as a
// tokenizer and a teacher, evaluated as imported with the teacher sampler, adapted to continuous
// inputs, then tuned, distilled and evaluated like a teacher of our own.
TEST_F(ClusterTest, ImportedLlamaGenCheckpointsRunThroughImportAdaptAndEveryStage) {
  const std::string fixtures =
      std::filesystem::canonical(std::string(DD2_SOURCE_DIR) + "/../shared/fixtures/llamagen").string();
  Up(2);
  // dd2ctl import llamagen: the two files and an eval of the teacher as imported.
  auto imported = Ctl({"import", "llamagen", "--gpt", fixtures + "/gpt_tiny_c2i.pt", "--vq", fixtures + "/vq_tiny.pt",
                       "--heads", "4", "--tokens", "16", "--eval", "20", "--wait"});
  ASSERT_EQ(imported.exit_code, 0) << imported.out << imported.err;
  Json first = CtlJson({"results", "llamagen-import-1"});
  ASSERT_EQ(first["evals"].size(), 1u);
  EXPECT_EQ(first["evals"][0]["state"], "succeeded");
  EXPECT_TRUE(first["evals"][0]["metrics"].contains("teacher_nll"));
  auto bad = Ctl({"import", "llamagen", "--gpt", "c2i.pt", "--vq", "vq.pt", "--preset", "M"});
  EXPECT_EQ(bad.exit_code, 2) << bad.out << bad.err;
  EXPECT_THAT(bad.err, ::testing::HasSubstr("jobs[1].params.preset: expected one of"));
  auto r = Ctl({"submit", WriteYaml("imported.yaml", R"(
name: imported
pipeline: dd2
tokenizer: {import: {file: )" + fixtures + R"(/vq_tiny.pt}}
teacher: {import: {file: )" + fixtures + R"(/gpt_tiny_c2i.pt, heads: 4, tokens: 16}}
adapt: {steps: 200}
tune: {steps: 3, head_steps: 2, pool: 10, batch: 4, m: 2, head_width: 16}
distill: {steps: 3, k: 2, batch: 4, m: 2}
eval: {samples: 20, batch: 20, marginal_samples: 20, euler_steps: 1}
)"), "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json jobs = CtlJson({"jobs", "imported-2"});
  std::map<std::string, Json> by_name;
  for (const auto& j : jobs["jobs"]) by_name[j["name"].get<std::string>()] = j;
  EXPECT_EQ(by_name.count("featurenet"), 0u);
  EXPECT_EQ(by_name["teacher"]["type"], "adapt");
  // The pipeline's imports are the ones dd2ctl import made: reused, not read again.
  EXPECT_THAT(by_name["tokenizer"]["reused_from"].get<std::string>(), ::testing::EndsWith("llamagen-import-1/tokenizer"));
  EXPECT_THAT(by_name["teacher-import"]["reused_from"].get<std::string>(),
              ::testing::EndsWith("llamagen-import-1/teacher-import"));
  // The adaptation: the MLP reproduces the token table, and fine-tuning lowers the held-out NLL.
  Json results = CtlJson({"results", "imported-2"});
  std::map<std::string, double> m;
  for (const char* key : {"embedding_fit_error", "nll_after_fit", "nll_adapted"}) {
    auto rows = Sql(std::string("SELECT value FROM metrics WHERE job_id = 'imported-2/teacher' AND key = '") + key +
                    "' ORDER BY step DESC LIMIT 1");
    if (rows.size() == 1) m[key] = std::stod(rows[0]);
  }
  ASSERT_EQ(m.size(), 3u);
  EXPECT_LT(m["embedding_fit_error"], 0.1);
  EXPECT_LT(m["nll_adapted"], m["nll_after_fit"]);
  ASSERT_EQ(results["evals"].size(), 7u);
  for (const auto& e : results["evals"]) {
    EXPECT_EQ(e["state"], "succeeded") << e["job"];
    EXPECT_TRUE(e["metrics"].contains("teacher_nll")) << e["job"];
    EXPECT_TRUE(e["metrics"].contains("latency_ms_b1")) << e["job"];
    EXPECT_FALSE(e["metrics"].contains("fid")) << e["job"];  // no feature network for LlamaGen's images
    EXPECT_TRUE(std::filesystem::exists(e["grid"].get<std::string>())) << e["grid"];
  }
  EXPECT_EQ(results["evals"][0]["job"], "eval-teacher-import");
  // The imported teacher's samples are RGB: the grid is 10 x 10 samples of 8 x 8 pixels, 3 channels.
  std::ifstream png(results["evals"][0]["grid"].get<std::string>(), std::ios::binary);
  std::string header(33, '\0');
  png.read(header.data(), 33);
  EXPECT_EQ(static_cast<uint8_t>(header[19]), 80);  // width (big-endian, low byte)
  EXPECT_EQ(static_cast<uint8_t>(header[23]), 80);  // height
  EXPECT_EQ(static_cast<uint8_t>(header[25]), 2);   // colour type 2: RGB
}

// kill -9 of one rank's worker during a 2-rank distill job: the whole gang stops, the next
// attempt (fresh rendezvous, other workers) resumes from the latest committed checkpoint, the job
// ends exactly at its target step, and at most one checkpoint interval is redone.
TEST_F(ClusterTest, GangRestartsFromTheLatestCommittedCheckpointAfterARankIsKilled) {
  Up(3);
  const std::string run = SubmitJson(WriteYaml("gang.yaml", R"(
name: gang
jobs:
  - {name: tokenizer, type: tokenizer, params: {steps: 4, batch: 8, channels: 16, codebook_size: 32, train_limit: 256}}
  - {name: teacher, type: teacher, after: [tokenizer], params: {steps: 4, batch: 8, width: 16, heads: 2, train_limit: 256}}
  - {name: tune, type: tune, after: [teacher], params: {steps: 4, head_steps: 2, pool: 20, batch: 8, m: 2, head_width: 16}}
  - name: distill
    type: distill
    after: [tune]
    resources: {workers: 2}
    params: {steps: 400, checkpoint_every: 40, k: 1, batch: 4, m: 2, collective_timeout_s: 30}
)"));
  ASSERT_EQ(run, "gang-1");
  const std::string job = "gang-1/distill";
  ASSERT_TRUE(WaitFor([&] {
    return Sql("SELECT COUNT(*) FROM checkpoints WHERE job_id = '" + job + "'") != std::vector<std::string>{"0"};
  }, 120));
  const auto workers = Sql("SELECT worker_ids FROM attempts WHERE id = '" + job + "#1'");
  ASSERT_EQ(workers.size(), 1u);
  const std::string victim = workers[0].substr(workers[0].find(',') + 1);  // rank 1
  ASSERT_EQ(::kill(Pid(home_ + "/workers/" + victim + "/pid"), SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] { return RunState(run) == "succeeded"; }, 180)) << RunState(run);

  EXPECT_EQ(Sql("SELECT step || '/' || total FROM jobs WHERE id = '" + job + "'"), std::vector<std::string>{"400/400"});
  EXPECT_EQ(Sql("SELECT state FROM attempts WHERE id = '" + job + "#1'"), std::vector<std::string>{"lost"});
  const auto last_attempt = Sql("SELECT id FROM attempts WHERE job_id = '" + job + "' ORDER BY number DESC LIMIT 1");
  ASSERT_EQ(last_attempt.size(), 1u);
  EXPECT_EQ(Sql("SELECT worker_ids NOT LIKE '%" + victim + "%' FROM attempts WHERE id = '" + last_attempt[0] + "'"),
            std::vector<std::string>{"1"});
  // The failure point: the first attempt's end. Compare the resume step with what was committed
  // and reached before it.
  const std::string lost_at = "(SELECT finished_ms FROM attempts WHERE id = '" + job + "#1')";
  const auto committed = Sql("SELECT MAX(step) FROM checkpoints WHERE job_id = '" + job + "' AND attempt_id = '" + job + "#1'");
  const auto reached = Sql("SELECT MAX(step) FROM metrics WHERE job_id = '" + job + "' AND ts_ms <= " + lost_at);
  const auto resumed = Sql("SELECT detail FROM events WHERE kind = 'attempt_resumed' AND attempt_id = '" + last_attempt[0] + "'");
  ASSERT_EQ(committed.size(), 1u);
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0], "step " + committed[0]);
  ASSERT_EQ(reached.size(), 1u);
  EXPECT_LE(std::stoll(reached[0]) - std::stoll(committed[0]), 40) << "more than one checkpoint interval redone";
  EXPECT_TRUE(std::filesystem::exists(home_ + "/artifacts/gang-1/distill/final.pt"));
  Json ckpts = CtlJson({"ckpt", "ls", run});
  EXPECT_FALSE(ckpts["checkpoints"].empty());
}

// SIGUSR1 to a worker mid-job: the job checkpoints at once, its attempt ends "preempted", it is
// rescheduled and resumes there, and no retry is used (retries: 0).
TEST_F(ClusterTest, SigusrOnAWorkerPreemptsItsJobWithoutUsingARetry) {
  Up(1);
  const std::string run = SubmitJson(WriteYaml("preempt.yaml", R"(
name: preempt
jobs:
  - {name: net, type: featurenet, retries: 0,
     params: {steps: 1000, checkpoint_every: 400, batch: 8, train_limit: 256}}
)"));
  const std::string job = "preempt-1/net";
  ASSERT_TRUE(WaitFor([&] {
    auto step = Sql("SELECT step FROM jobs WHERE id = '" + job + "'");
    return !step.empty() && std::stoll(step[0]) >= 20;
  }, 120));
  ASSERT_EQ(::kill(Pid(home_ + "/workers/local-1/pid"), SIGUSR1), 0);
  ASSERT_TRUE(WaitFor([&] { return RunState(run) == "succeeded"; }, 180)) << RunState(run);
  EXPECT_EQ(Sql("SELECT state FROM attempts WHERE id = '" + job + "#1'"), std::vector<std::string>{"preempted"});
  EXPECT_EQ(Sql("SELECT state FROM attempts WHERE id = '" + job + "#2'"), std::vector<std::string>{"succeeded"});
  const auto at = Sql("SELECT step FROM checkpoints WHERE attempt_id = '" + job + "#1'");
  ASSERT_EQ(at.size(), 1u) << "the preemption checkpoint";
  EXPECT_NE(std::stoll(at[0]) % 400, 0) << "written at once, not at the next interval";
  EXPECT_EQ(Sql("SELECT detail FROM events WHERE kind = 'attempt_resumed' AND attempt_id = '" + job + "#2'"),
            std::vector<std::string>{"step " + at[0]});
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM events WHERE kind = 'job_retrying'"), std::vector<std::string>{"0"});
}

// Global options after the subcommand (CLI11 fallthrough): `dd2ctl up --home DIR` once said
// "arguments were not expected".
TEST_F(ClusterTest, GlobalOptionsWorkAfterTheSubcommand) {
  auto up = testing::RunCommand({kBin + "/dd2ctl", "up", "--home", home_, "--workers", "1"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  auto workers = testing::RunCommand({kBin + "/dd2ctl", "workers", "--json", "--home", home_, "--timeout-ms", "3000"});
  ASSERT_EQ(workers.exit_code, 0) << workers.err;
  EXPECT_EQ(Json::parse(workers.out)["workers"].size(), 1u);
  auto ep = testing::RunCommand({kBin + "/dd2ctl", "endpoint", "--home", home_});
  EXPECT_EQ(ep.exit_code, 0) << ep.err;
  EXPECT_THAT(ep.out, ::testing::StartsWith("tcp://127.0.0.1:"));
  auto ls = testing::RunCommand({kBin + "/dd2ctl", "sweep", "ls", "--home", home_});
  EXPECT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_EQ(testing::RunCommand({kBin + "/dd2ctl", "down", "--home", home_}).exit_code, 0);
}

TEST_F(ClusterTest, UnreachableCoordinatorGivesExitCodeFour) {
  auto r = RunCommand({kBin + "/dd2ctl", "--endpoint", "tcp://127.0.0.1:1", "--timeout-ms", "200", "status"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  auto none = Ctl({"status"});  // no endpoint recorded in a fresh home
  EXPECT_EQ(none.exit_code, 4) << none.err;
}

}  // namespace
}  // namespace dd2
