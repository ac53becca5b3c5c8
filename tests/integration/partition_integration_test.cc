// Several hosts and partitions: the test builds three hosts of its own with network namespaces
// and veth pairs (iproute2), puts a keyed coordinator in one and a keyed worker in each of the
// others, runs a pipeline across them, then cuts one worker's link. Shorter than
// lost_after_ms, the worker is only suspect and its job keeps running; longer, the worker is
// lost, its job is rescheduled on the other worker, and when the link comes back the returning
// worker's stale attempt is fenced (stopped, never reported), so the job succeeds once. All
// traffic stays inside the test's namespaces (10.77.x.0/24 exists nowhere else). Needs root
// (`ip netns add`); skips, saying so, without it.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tests/testing/sql_rows.h"
#include "tests/testing/test_util.h"

namespace dd2 {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using testing::CommandResult;

const std::string kBin = DD2_BIN_DIR;
const std::string kSrc = DD2_SOURCE_DIR;
constexpr int kLostAfterMs = 4000;

class PartitionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tag_ = std::to_string(::getpid() % 100000);
    host_ = {"dd2c" + tag_, "dd2a" + tag_, "dd2b" + tag_};  // coordinator, w1, w2
    if (Sh("ip netns add " + host_[0]).exit_code != 0) {
      GTEST_SKIP() << "cannot create network namespaces (root needed): " << last_err_;
    }
    made_ns_ = true;
    ASSERT_EQ(Sh("ip netns add " + host_[1] + " && ip netns add " + host_[2]).exit_code, 0) << last_err_;
    for (const auto& ns : host_) ASSERT_EQ(Sh("ip -n " + ns + " link set lo up").exit_code, 0) << last_err_;
    // One veth pair per worker: the coordinator's end 10.77.N.1, the worker's 10.77.N.2.
    for (int n = 1; n <= 2; ++n) {
      const std::string c_end = Link(n), w_end = "dd2w" + std::to_string(n) + "-" + tag_;
      const std::string net = "10.77." + std::to_string(n);
      ASSERT_EQ(Sh(absl::StrCat("ip link add ", c_end, " type veth peer name ", w_end, " && ip link set ", c_end,
                                " netns ", host_[0], " && ip link set ", w_end, " netns ", host_[n], " && ip -n ",
                                host_[0], " addr add ", net, ".1/24 dev ", c_end, " && ip -n ", host_[n], " addr add ",
                                net, ".2/24 dev ", w_end, " && ip -n ", host_[0], " link set ", c_end, " up && ip -n ",
                                host_[n], " link set ", w_end, " up"))
                    .exit_code,
                0)
          << last_err_;
    }
    home_ = dir_.path() + "/home";
    keys_ = dir_.path() + "/keys";
    fs::create_directories(keys_ + "/authorized");
    for (auto [name, role] : std::vector<std::pair<std::string, std::string>>{
             {"coordinator", "coordinator"}, {"w1", "worker"}, {"w2", "worker"}, {"admin", "admin"}}) {
      auto r = testing::RunCommand({kBin + "/dd2ctl", "keygen", "--out", keys_, "--role", role, "--name", name});
      ASSERT_EQ(r.exit_code, 0) << r.err;
      if (role != "coordinator") fs::copy_file(keys_ + "/" + name + ".pub", keys_ + "/authorized/" + name + ".pub");
    }
    Start(host_[0], "coordinator",
          {kBin + "/dd2-coordinator", "--home", home_, "--endpoint", "tcp://0.0.0.0:7700", "--curve-secret",
           keys_ + "/coordinator.key", "--authorized-keys", keys_ + "/authorized", "--heartbeat-interval-ms", "200",
           "--lost-after-ms", std::to_string(kLostAfterMs), "--retry-backoff-ms", "100"});
    for (int n = 1; n <= 2; ++n) {
      const std::string id = "w" + std::to_string(n), net = "10.77." + std::to_string(n);
      Start(host_[n], id,
            {kBin + "/dd2-worker", "--coordinator", "tcp://" + net + ".1:7700", "--id", id, "--home", home_,
             "--work-dir", dir_.path() + "/" + id, "--artifacts", home_ + "/artifacts", "--advertise-host", net + ".2",
             "--curve-secret", keys_ + "/" + id + ".key", "--coordinator-key", keys_ + "/coordinator.pub"});
    }
    ASSERT_TRUE(WaitFor([&] { return WorkerStates() == std::vector<std::string>{"w1 alive", "w2 alive"}; }, 30))
        << ::testing::PrintToString(WorkerStates()) << Log("coordinator") << Log("w1");
  }

  void TearDown() override {
    for (int pid : pids_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (made_ns_) Sh("ip netns del " + host_[0] + "; ip netns del " + host_[1] + "; ip netns del " + host_[2]);
  }

  CommandResult Sh(const std::string& command) {
    auto r = testing::RunCommand({"/bin/sh", "-c", command});
    last_err_ = r.err;
    return r;
  }

  // The coordinator's end of worker n's link.
  std::string Link(int n) const { return "dd2c" + std::to_string(n) + "-" + tag_; }
  void SetLink(int n, bool up) {
    ASSERT_EQ(Sh("ip -n " + host_[0] + " link set " + Link(n) + (up ? " up" : " down")).exit_code, 0) << last_err_;
  }

  // Runs argv inside namespace `ns`, stderr to <dir>/<name>.log.
  void Start(const std::string& ns, const std::string& name, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"/usr/sbin/ip", "netns", "exec", ns});
    pids_.push_back(testing::SpawnWithStderrTo(argv, dir_.path() + "/" + name + ".log"));
  }

  std::string Log(const std::string& name) {
    std::ifstream in(dir_.path() + "/" + name + ".log");
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

  // dd2ctl inside the coordinator's host, keyed as admin.
  CommandResult Ctl(std::vector<std::string> args) {
    std::vector<std::string> argv = {"/usr/sbin/ip", "netns", "exec", host_[0], kBin + "/dd2ctl", "--home", home_,
                                     "--endpoint", "tcp://10.77.1.1:7700", "--key", keys_ + "/admin.key",
                                     "--coordinator-key", keys_ + "/coordinator.pub"};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunCommand(argv);
  }

  Json CtlJson(std::vector<std::string> args) {
    args.push_back("--json");
    auto r = Ctl(args);
    return r.exit_code == 0 ? Json::parse(r.out, nullptr, false) : Json();
  }

  std::vector<std::string> WorkerStates() {
    std::vector<std::string> out;
    for (const auto& w : CtlJson({"workers"}).value("workers", Json::array())) {
      out.push_back(w.value("id", "") + " " + w.value("state", ""));
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string WorkerState(const std::string& id) {
    for (const auto& w : WorkerStates()) {
      if (w.rfind(id + " ", 0) == 0) return w.substr(id.size() + 1);
    }
    return "";
  }

  std::vector<std::string> Sql(const std::string& query) { return testing::SqlRows(home_ + "/coordinator.db", query); }

  static bool WaitFor(const std::function<bool()>& pred, int seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return pred();
  }

  // Whether a process of attempt `attempt` still runs (its command line names it).
  static bool AttemptProcessRuns(const std::string& attempt) {
    for (const auto& e : fs::directory_iterator("/proc")) {
      std::ifstream in(e.path() / "cmdline");
      std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (cmdline.find(std::string("--attempt-id") + '\0' + attempt + '\0') != std::string::npos) return true;
    }
    return false;
  }

  testing::TempDir dir_;
  std::string tag_, home_, keys_, last_err_;
  std::vector<std::string> host_;
  bool made_ns_ = false;
  std::vector<int> pids_;
};

TEST_F(PartitionTest, ShortCutKeepsTheJobLongCutReschedulesItAndTheReturningAttemptIsFenced) {
  // A pipeline across the two hosts.
  auto smoke = Ctl({"submit", kSrc + "/examples/smoke.yaml", "--wait"});
  ASSERT_EQ(smoke.exit_code, 0) << smoke.out << smoke.err << Log("coordinator");
  EXPECT_EQ(Sql("SELECT COUNT(DISTINCT worker_ids) FROM attempts WHERE job_id LIKE 'smoke-1/%'"),
            std::vector<std::string>{"2"})
      << "left and right ran at the same time, one on each host";

  const std::string yaml = dir_.path() + "/long.yaml";
  std::ofstream(yaml) << "name: long\njobs:\n  - {name: work, type: sleep, params: {seconds: 25, steps: 250}}\n";
  ASSERT_EQ(Ctl({"submit", yaml}).exit_code, 0);
  const std::string first = "long-2/work#1";
  std::string victim;
  ASSERT_TRUE(WaitFor([&] {
    auto w = Sql("SELECT worker_ids FROM attempts WHERE id = '" + first + "' AND state = 'running'");
    if (!w.empty()) victim = w[0];
    return !victim.empty();
  }, 30));
  const int n = victim == "w1" ? 1 : 2;
  const std::string other = n == 1 ? "w2" : "w1";

  // Short cut: suspect, not dead; the attempt keeps running and is not replaced.
  SetLink(n, false);
  EXPECT_TRUE(WaitFor([&] { return WorkerState(victim) == "suspect"; }, 3)) << WorkerState(victim);
  SetLink(n, true);
  ASSERT_TRUE(WaitFor([&] { return WorkerState(victim) == "alive"; }, 10)) << WorkerState(victim);
  EXPECT_EQ(Sql("SELECT id || ' ' || state FROM attempts WHERE job_id = 'long-2/work'"),
            std::vector<std::string>{first + " running"});
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM events WHERE kind = 'attempt_lost'"), std::vector<std::string>{"0"})
      << ::testing::PrintToString(Sql("SELECT ts_ms || ' ' || kind || ' ' || attempt_id || ' ' || detail FROM events "
                                      "WHERE kind LIKE 'attempt_%' OR kind LIKE 'worker_%' ORDER BY id"))
      << Log("coordinator");

  // Long cut: lost; the job moves to the other host.
  SetLink(n, false);
  ASSERT_TRUE(WaitFor([&] { return WorkerState(victim) == "lost"; }, 15)) << WorkerState(victim);
  ASSERT_TRUE(WaitFor([&] {
    return Sql("SELECT worker_ids || ' ' || state FROM attempts WHERE id = 'long-2/work#2'") ==
           std::vector<std::string>{other + " running"};
  }, 15)) << ::testing::PrintToString(Sql("SELECT id || ' ' || worker_ids || ' ' || state FROM attempts"));
  EXPECT_EQ(Sql("SELECT state FROM attempts WHERE id = '" + first + "'"), std::vector<std::string>{"lost"});
  EXPECT_TRUE(AttemptProcessRuns(first)) << "cut off, the victim's attempt still runs on its host";

  // The link returns: the worker registers again, its stale attempt is fenced and stops.
  SetLink(n, true);
  ASSERT_TRUE(WaitFor([&] { return WorkerState(victim) == "alive"; }, 15)) << WorkerState(victim);
  EXPECT_TRUE(WaitFor([&] { return !AttemptProcessRuns(first); }, 10)) << "the stale attempt still runs";
  EXPECT_THAT(Log(victim), ::testing::HasSubstr(first + " is no longer this worker's (fenced by the coordinator)"));

  ASSERT_TRUE(WaitFor([&] { return CtlJson({"status", "long-2"})["run"].value("state", "") == "succeeded"; }, 60));
  EXPECT_EQ(Sql("SELECT id || ' ' || state FROM attempts WHERE job_id = 'long-2/work' ORDER BY number"),
            (std::vector<std::string>{first + " lost", "long-2/work#2 succeeded"}));
  EXPECT_EQ(Sql("SELECT attempt_id FROM events WHERE kind = 'job_succeeded' AND job_id = 'long-2/work'"),
            std::vector<std::string>{"long-2/work#2"});
}

}  // namespace
}  // namespace dd2
