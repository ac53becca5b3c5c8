// Security end to end, with the real binaries: `dd2ctl up --curve` starts a keyed coordinator
// (CURVE, ZAP handler, authorized-keys folder) and keyed workers on 127.0.0.1; the tests then
// knock on it with dd2ctl and dd2-worker processes holding no key, an unlisted key or the wrong
// coordinator key, and with keys of each role, and check what each may do.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <filesystem>
#include <regex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/client.h"
#include "common/curve_keys.h"
#include "tests/integration/cluster_fixture.h"

namespace dd2 {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class SecurityTest : public ClusterTest {
 protected:
  void UpKeyed(int workers) {
    auto r = Ctl({"up", "--curve", "--workers", std::to_string(workers), "--heartbeat-ms", "200", "--lost-after-ms",
                  "2000", "--retry-backoff-ms", "100"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    auto ep = ReadEndpoint(home_);
    ASSERT_TRUE(ep.ok());
    endpoint_ = *ep;
    keys_ = dir_.path() + "/keys";
  }

  // Writes keys_/<name>.key and .pub; authorizes the key when `authorize`.
  std::string Key(const std::string& name, const std::string& role, bool authorize) {
    auto r = testing::RunCommand({kBin + "/dd2ctl", "keygen", "--out", keys_, "--role", role, "--name", name});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (authorize) fs::copy_file(keys_ + "/" + name + ".pub", home_ + "/keys/authorized/" + name + ".pub");
    return keys_ + "/" + name + ".key";
  }

  // dd2ctl against the keyed coordinator with `key` and `coordinator_pub` ("" and "": no key at
  // all, from a home without keys). Short timeouts: refused calls fail fast.
  CommandResult As(const std::string& key, const std::string& coordinator_pub, std::vector<std::string> args) {
    std::vector<std::string> argv = {kBin + "/dd2ctl", "--home", dir_.path() + "/keyless-home", "--endpoint",
                                     endpoint_, "--timeout-ms", "300"};
    if (!key.empty()) argv.insert(argv.end(), {"--key", key, "--coordinator-key", coordinator_pub});
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunCommand(argv);
  }

  Json AdminStatus() {
    auto r = Ctl({"status", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return Json::parse(r.out, nullptr, false);
  }

  bool WorkerRegistered(const std::string& id) {
    Json w = CtlJson({"workers"});
    for (const auto& x : w["workers"]) {
      if (x["id"] == id) return true;
    }
    return false;
  }

  // Starts dd2-worker `id` with `extra` flags; returns its pid. Its log is <dir>/<id>.log.
  int StartWorker(const std::string& id, std::vector<std::string> extra) {
    std::vector<std::string> argv = {kBin + "/dd2-worker", "--coordinator", endpoint_, "--id", id,
                                     "--home", dir_.path() + "/keyless-home", "--advertise-host", "127.0.0.1"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    const int pid = testing::SpawnWithStderrTo(argv, dir_.path() + "/" + id + ".log");
    started_.push_back(pid);
    return pid;
  }

  void TearDown() override {
    for (int pid : started_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    ClusterTest::TearDown();
  }

  std::string endpoint_, keys_;
  std::vector<int> started_;
};

TEST_F(SecurityTest, KeyedLocalClusterRunsAPipelineEndToEnd) {
  UpKeyed(2);
  struct stat st{};
  ASSERT_EQ(::stat((home_ + "/keys/coordinator.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto r = Ctl({"submit", kSrc + "/examples/smoke.yaml", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json status = AdminStatus();
  EXPECT_EQ(status["coordinator"]["authentication"], "curve");
  EXPECT_EQ(status["runs"][0]["state"], "succeeded");
  EXPECT_EQ(status["coordinator"]["rejected_connections"], 0);
}

TEST_F(SecurityTest, PeersWithoutAValidKeyCannotSubmitListRegisterOrShutDown) {
  UpKeyed(0);
  const std::string unlisted = Key("stranger", "admin", false);
  const std::string unlisted_worker = Key("stranger-worker", "worker", false);
  const std::string listed = Key("alice", "admin", true);
  const std::string listed_worker = Key("bob", "worker", true);
  Key("impostor", "coordinator", false);
  const std::string coordinator = home_ + "/keys/coordinator.pub", wrong = keys_ + "/impostor.pub";
  struct Case {
    std::string what, key, server, worker_key;
  };
  const std::vector<Case> cases = {{"no key", "", "", ""},
                                   {"unlisted key", unlisted, coordinator, unlisted_worker},
                                   {"wrong coordinator key", listed, wrong, listed_worker}};
  const std::string smoke = kSrc + "/examples/smoke.yaml";
  int n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"submit", smoke}, {"status"}, {"workers"}, {"shutdown"}}) {
      auto r = As(c.key, c.server, args);
      EXPECT_EQ(r.exit_code, 5) << args[0] << ": " << r.out << r.err;
      EXPECT_THAT(r.err, HasSubstr("did not answer")) << args[0];
    }
    // Register: a real worker with the same credentials never gets in.
    const std::string id = "intruder-" + std::to_string(n++);
    std::vector<std::string> flags;
    if (!c.key.empty()) flags = {"--curve-secret", c.worker_key, "--coordinator-key", c.server};
    StartWorker(id, flags);
    ASSERT_TRUE(WaitFor([&] {
      auto log = ReadFile(dir_.path() + "/" + id + ".log");
      return log.ok() && log->find("cannot connect to") != std::string::npos;
    })) << *ReadFile(dir_.path() + "/" + id + ".log");
    EXPECT_FALSE(WorkerRegistered(id));
  }
  // Nothing got through: the coordinator is up, with no run and no worker, and counted the refusals.
  Json status = AdminStatus();
  EXPECT_TRUE(status["runs"].empty());
  EXPECT_EQ(status["coordinator"]["workers"]["alive"], 0);
  EXPECT_GE(status["coordinator"]["rejected_connections"].get<int64_t>(), 2);
  EXPECT_TRUE(Sql("SELECT id FROM runs").empty());
  EXPECT_TRUE(Sql("SELECT id FROM workers").empty());
  // The same keys, authorized and with the right coordinator key, do get in.
  EXPECT_EQ(As(listed, coordinator, {"status"}).exit_code, 0);
  StartWorker("bob", {"--curve-secret", listed_worker, "--coordinator-key", coordinator});
  EXPECT_TRUE(WaitFor([&] { return WorkerRegistered("bob"); }));
}

TEST_F(SecurityTest, EachRoleMaySendOnlyItsOwnMessages) {
  UpKeyed(1);
  const std::string coordinator = home_ + "/keys/coordinator.pub";
  const std::string worker = home_ + "/keys/worker.key";
  const std::string client = Key("carol", "client", true);
  const std::string smoke = kSrc + "/examples/smoke.yaml";
  // A worker key: no submit, no query, no shutdown.
  for (const std::vector<std::string>& args : {std::vector<std::string>{"submit", smoke}, {"status"}, {"shutdown"}}) {
    auto r = As(worker, coordinator, args);
    EXPECT_EQ(r.exit_code, 5) << args[0] << r.err;
    EXPECT_THAT(r.err, HasSubstr("a worker peer may not send")) << args[0];
  }
  // A client key: submit, query and cancel, but no shutdown.
  auto submitted = As(client, coordinator, {"submit", smoke, "--wait"});
  EXPECT_EQ(submitted.exit_code, 0) << submitted.err;
  EXPECT_EQ(As(client, coordinator, {"status"}).exit_code, 0);
  auto down = As(client, coordinator, {"shutdown"});
  EXPECT_EQ(down.exit_code, 5);
  EXPECT_THAT(down.err, HasSubstr("needs an admin key"));
  Json status = AdminStatus();
  EXPECT_EQ(status["coordinator"]["rejected_frames"], 4);
  // The admin key (the home's dd2ctl.key) shuts it down.
  const int pid = Pid(home_ + "/coordinator.pid");
  auto r = Ctl({"shutdown"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(WaitFor([&] { return ::kill(pid, 0) != 0; }));
}

TEST_F(SecurityTest, KeysRotateWithoutARestart) {
  UpKeyed(0);
  const std::string coordinator_pub = home_ + "/keys/coordinator.pub";
  const std::string old_key = Key("old", "client", true);
  const std::string new_key = Key("new", "client", false);
  EXPECT_EQ(As(new_key, coordinator_pub, {"status"}).exit_code, 5);
  // A long-lived client with the old key.
  auto old_pair = ReadSecretKeyFile(old_key);
  auto server = ReadPublicKeyFile(coordinator_pub);
  ASSERT_TRUE(old_pair.ok() && server.ok());
  CoordinatorClient session(endpoint_, 300, 1, CurveClientKeys{*old_pair, server->public_key});
  proto::Envelope req;
  req.mutable_status();
  ASSERT_TRUE(session.Call(req).ok());
  // Rotation: add the new key, then remove the old one.
  fs::copy_file(keys_ + "/new.pub", home_ + "/keys/authorized/new.pub");
  EXPECT_EQ(As(new_key, coordinator_pub, {"status"}).exit_code, 0);
  fs::remove(home_ + "/keys/authorized/old.pub");
  EXPECT_EQ(As(old_key, coordinator_pub, {"status"}).exit_code, 5);
  // The old key's open connection loses its rights too (at the folder's next reload, within a second).
  absl::Status revoked;
  EXPECT_TRUE(WaitFor([&] {
    revoked = session.Call(req).status();
    return absl::IsPermissionDenied(revoked);
  }, 20)) << revoked;
  EXPECT_THAT(std::string(revoked.message()), HasSubstr("removed from the coordinator's authorized keys"));
  EXPECT_EQ(As(new_key, coordinator_pub, {"status"}).exit_code, 0);
}

TEST_F(SecurityTest, NonLoopbackEndpointWithoutKeysIsRefusedWithHowToCreateThem) {
  auto r = testing::RunCommand({kBin + "/dd2-coordinator", "--home", home_, "--endpoint", "tcp://0.0.0.0:0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("not loopback"));
  EXPECT_THAT(r.err, HasSubstr("dd2ctl keygen --out KEYS --role coordinator"));
  EXPECT_THAT(r.err, HasSubstr("--curve-secret"));
  // With keys it listens there, and a keyed client reaches it (through loopback, which that
  // address includes); the admin key stops it.
  ASSERT_TRUE(EnsureKeyedHome(dir_.path() + "/wide").ok());
  const KeyedHomePaths k = KeyedHome(dir_.path() + "/wide");
  const int pid = ::fork();
  if (pid == 0) {
    ::execl((kBin + "/dd2-coordinator").c_str(), "dd2-coordinator", "--home", (dir_.path() + "/wide").c_str(),
            "--endpoint", "tcp://0.0.0.0:0", "--curve-secret", k.coordinator_key.c_str(), "--authorized-keys",
            k.authorized.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  started_.push_back(pid);
  std::string wide;
  ASSERT_TRUE(WaitFor([&] {
    auto ep = ReadEndpoint(dir_.path() + "/wide");
    if (ep.ok()) wide = *ep;
    return ep.ok();
  }));
  EXPECT_THAT(wide, ::testing::StartsWith("tcp://0.0.0.0:"));
  const std::string via_loopback = "tcp://127.0.0.1:" + wide.substr(wide.rfind(':') + 1);
  auto wide_status = testing::RunCommand({kBin + "/dd2ctl", "--home", dir_.path() + "/wide", "--endpoint", via_loopback,
                                          "status", "--json"});
  ASSERT_EQ(wide_status.exit_code, 0) << wide_status.err;
  EXPECT_EQ(Json::parse(wide_status.out)["coordinator"]["authentication"], "curve");
  EXPECT_EQ(testing::RunCommand({kBin + "/dd2ctl", "--home", dir_.path() + "/wide", "--endpoint", via_loopback,
                                 "shutdown"}).exit_code, 0);
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  started_.clear();
  // A keyless local cluster still works, and no message stops its coordinator: dd2ctl down does.
  Up(0);
  auto down = Ctl({"shutdown"});
  EXPECT_EQ(down.exit_code, 5);
  EXPECT_THAT(down.err, HasSubstr("dd2ctl down"));
  EXPECT_EQ(Ctl({"status"}).exit_code, 0);
  EXPECT_EQ(Ctl({"down"}).exit_code, 0);
}

}  // namespace
}  // namespace dd2
