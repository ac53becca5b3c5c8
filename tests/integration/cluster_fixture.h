// ClusterTest: a fixture for end-to-end tests of the real binaries. Each test gets a temporary
// dd2 home; Up() starts a coordinator and workers with dd2ctl up (short heartbeats), Ctl runs
// dd2ctl, Sql reads the coordinator's SQLite file, WaitFor polls a condition. TearDown stops
// the local cluster. Thread-compatible.
#ifndef DD2_TESTS_INTEGRATION_CLUSTER_FIXTURE_H_
#define DD2_TESTS_INTEGRATION_CLUSTER_FIXTURE_H_

#include <signal.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/home.h"
#include "tests/testing/sql_rows.h"
#include "tests/testing/test_util.h"

namespace dd2 {

inline const std::string kBin = DD2_BIN_DIR;
inline const std::string kSrc = DD2_SOURCE_DIR;

using Json = nlohmann::json;
using testing::CommandResult;

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override { home_ = dir_.path() + "/home"; }
  void TearDown() override { Ctl({"down"}); }

  CommandResult Ctl(std::vector<std::string> args) {
    std::vector<std::string> argv = {kBin + "/dd2ctl", "--home", home_};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunCommand(argv);
  }

  void Up(int workers) {
    auto r = Ctl({"up", "--workers", std::to_string(workers), "--heartbeat-ms", "200",
                  "--lost-after-ms", "2000", "--retry-backoff-ms", "100"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }

  Json CtlJson(std::vector<std::string> args) {
    args.push_back("--json");
    auto r = Ctl(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return Json::parse(r.out, nullptr, false);
  }

  std::string WriteYaml(const std::string& name, const std::string& text) {
    const std::string path = dir_.path() + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  std::string SubmitJson(const std::string& path) {
    Json j = CtlJson({"submit", path});
    return j.value("run_id", "");
  }

  // Polls `pred` every 100 ms until it holds or `seconds` pass.
  static bool WaitFor(const std::function<bool()>& pred, int seconds = 60) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return pred();
  }

  std::string RunState(const std::string& run) {
    Json st = CtlJson({"status", run});
    return st.is_discarded() ? "" : st["run"].value("state", "");
  }

  // kill -9 of the coordinator; returns once it is gone.
  void KillCoordinator() {
    const int pid = Pid(home_ + "/coordinator.pid");
    ASSERT_GT(pid, 0);
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_TRUE(WaitFor([&] { return ::kill(pid, 0) != 0; }, 10));
  }

  int Pid(const std::string& pid_file) {
    auto text = ReadFile(pid_file);
    return text.ok() ? std::stoi(*text) : -1;
  }

  // Rows of a one-column SQL query on the coordinator's database.
  std::vector<std::string> Sql(const std::string& query) {
    return testing::SqlRows(home_ + "/coordinator.db", query);
  }

  testing::TempDir dir_;
  std::string home_;
};

}  // namespace dd2

#endif  // DD2_TESTS_INTEGRATION_CLUSTER_FIXTURE_H_
