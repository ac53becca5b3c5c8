// The coordinator's HTTP endpoint with the real binaries: /metrics checked by promtool and
// scraped by a real Prometheus server the test starts on loopback (then asked through its
// query API), the /api/v1 documents compared with dd2ctl's --json ones, and malformed, huge and
// slow requests that must leave the server answering.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/integration/cluster_fixture.h"

namespace dd2 {
namespace {

using ::testing::HasSubstr;

// One request on a fresh connection; the raw response ("" when the server closed without one).
std::string Exchange(int port, const std::string& request, int timeout_s = 10) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    char buf[65536];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) response.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return response;
}

int StatusOf(const std::string& response) {
  std::smatch m;
  return std::regex_search(response, m, std::regex("^HTTP/1\\.1 (\\d{3})")) ? std::stoi(m[1]) : 0;
}

std::string BodyOf(const std::string& response) {
  const size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

std::string Get(int port, const std::string& path) {
  return Exchange(port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
}

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

class HttpTest : public ClusterTest {
 protected:
  void UpWithHttp(int workers) {
    Up(workers);
    auto url = ReadHttpUrl(home_);
    ASSERT_TRUE(url.ok()) << url.status();
    std::smatch m;
    ASSERT_TRUE(std::regex_match(*url, m, std::regex("http://127\\.0\\.0\\.1:(\\d+)/"))) << *url;
    port_ = std::stoi(m[1]);
  }

  // A run that has finished, and a snapshot that shows it (published every 250 ms).
  std::string FinishedSmokeRun() {
    auto r = Ctl({"submit", kSrc + "/examples/smoke.yaml", "--wait"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(WaitFor([&] {
      return Json::parse(BodyOf(Get(port_, "/api/v1/runs/smoke-1")), nullptr, false)["run"].value("state", "") ==
             "succeeded";
    }, 10));
    return "smoke-1";
  }

  void TearDown() override {
    if (prometheus_ > 0) {
      ::kill(prometheus_, SIGKILL);
      ::waitpid(prometheus_, nullptr, 0);
    }
    ClusterTest::TearDown();
  }

  int port_ = 0;
  pid_t prometheus_ = -1;
};

TEST_F(HttpTest, MetricsPassPromtoolAndARealPrometheusScrapesThem) {
  UpWithHttp(2);
  FinishedSmokeRun();
  const std::string metrics = Get(port_, "/metrics");
  ASSERT_EQ(StatusOf(metrics), 200) << metrics;
  EXPECT_THAT(metrics, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  const std::string text = BodyOf(metrics);
  EXPECT_THAT(text, HasSubstr("dd2_jobs{state=\"succeeded\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("dd2_workers{state=\"alive\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("dd2_sqlite_commit_seconds_bucket{le=\"+Inf\"}"));
  EXPECT_THAT(text, HasSubstr("dd2_events_total{kind=\"job_succeeded\"} 4\n"));
  const std::string file = dir_.path() + "/metrics.txt";
  std::ofstream(file) << text;
  auto check = testing::RunCommand({"/bin/sh", "-c", "promtool check metrics < " + file});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;

  // A real Prometheus scrapes the coordinator every second.
  const int prom_port = FreePort();
  const std::string config = dir_.path() + "/prometheus.yml";
  std::ofstream(config) << "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                        << "scrape_configs:\n  - job_name: dd2\n    static_configs:\n      - targets: ['127.0.0.1:"
                        << port_ << "']\n";
  prometheus_ = ::fork();
  if (prometheus_ == 0) {
    FILE* f = std::freopen((dir_.path() + "/prometheus.log").c_str(), "w", stderr);
    (void)f;
    const std::string listen = "--web.listen-address=127.0.0.1:" + std::to_string(prom_port);
    const std::string cfg = "--config.file=" + config, tsdb = "--storage.tsdb.path=" + dir_.path() + "/tsdb";
    ::execl("/usr/bin/prometheus", "prometheus", cfg.c_str(), tsdb.c_str(), listen.c_str(), nullptr);
    ::_exit(127);
  }
  const std::string query = "/api/v1/query?query=" + std::string("dd2_jobs%7Bstate%3D%22succeeded%22%7D");
  Json answer;
  EXPECT_TRUE(WaitFor([&] {
    answer = Json::parse(BodyOf(Get(prom_port, query)), nullptr, false);
    return answer.is_object() && answer.value("status", "") == "success" && !answer["data"]["result"].empty();
  }, 60)) << answer.dump() << ReadFile(dir_.path() + "/prometheus.log").value_or("");
  ASSERT_FALSE(answer["data"]["result"].empty());
  const Json& series = answer["data"]["result"][0];
  EXPECT_EQ(series["metric"]["job"], "dd2");
  EXPECT_EQ(series["value"][1], "4") << "Prometheus holds the coordinator's value";
}

TEST_F(HttpTest, ApiDocumentsAreDd2ctlsDocuments) {
  UpWithHttp(1);
  const std::string run = FinishedSmokeRun();
  auto api = [&](const std::string& path) { return Json::parse(BodyOf(Get(port_, path)), nullptr, false); };
  EXPECT_EQ(api("/api/v1/runs/" + run), CtlJson({"status", run}));
  EXPECT_EQ(api("/api/v1/runs/" + run + "/jobs"), CtlJson({"jobs", run}));
  EXPECT_EQ(api("/api/v1/runs/" + run + "/checkpoints"), CtlJson({"ckpt", "ls", run}));
  EXPECT_EQ(api("/api/v1/status")["runs"], CtlJson({"status"})["runs"]);
  const Json brief = api("/api/v1/runs")["runs"];
  EXPECT_EQ(brief, CtlJson({"status", "--brief"})["runs"]);
  ASSERT_EQ(brief.size(), 1u);
  EXPECT_FALSE(brief[0].contains("jobs")) << "the runs list leaves the jobs out";
  EXPECT_EQ(brief[0]["progress"], 1.0);
  EXPECT_EQ(api("/api/v1/sweeps"), CtlJson({"sweep", "ls"}));
  const Json workers = api("/api/v1/workers");
  ASSERT_EQ(workers["workers"].size(), 1u);
  EXPECT_EQ(workers["workers"][0]["id"], CtlJson({"workers"})["workers"][0]["id"]);
  const Json series = api("/api/v1/runs/" + run + "/metrics?job=merge");
  ASSERT_EQ(series["metrics"].size(), 5u) << series.dump();
  EXPECT_EQ(series["metrics"][4], (Json{{"job", "merge"}, {"key", "loss"}, {"step", 5}, {"value", 0.2}}));
  EXPECT_EQ(StatusOf(Get(port_, "/api/v1/runs/nope-9")), 404);
  EXPECT_EQ(StatusOf(Get(port_, "/api/v1/runs/" + run + "/metrics?job=nope")), 404);
  auto dashboard = Ctl({"dashboard"});
  EXPECT_EQ(dashboard.exit_code, 0);
  EXPECT_EQ(dashboard.out, "http://127.0.0.1:" + std::to_string(port_) + "/\n");
}

// A keyed coordinator's HTTP endpoint wants the token derived from its key (<home>/http-token),
// as a bearer header or in the URL that dd2ctl dashboard prints.
TEST_F(HttpTest, KeyedCoordinatorWantsItsToken) {
  auto r = Ctl({"up", "--curve", "--workers", "1", "--heartbeat-ms", "200"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto address = ReadHttpAddress(home_);
  ASSERT_TRUE(address.ok());
  port_ = std::stoi(address->substr(address->find(':') + 1));
  auto token = ReadFile(home_ + "/http-token");
  ASSERT_TRUE(token.ok());
  const std::string t = token->substr(0, token->find('\n'));
  EXPECT_EQ(t.size(), 64u);
  EXPECT_EQ(std::filesystem::status(home_ + "/http-token").permissions() & std::filesystem::perms::others_read,
            std::filesystem::perms::none);
  EXPECT_EQ(StatusOf(Get(port_, "/metrics")), 401);
  EXPECT_EQ(StatusOf(Get(port_, "/metrics?token=wrong")), 401);
  EXPECT_EQ(StatusOf(Get(port_, "/metrics?token=" + t)), 200);
  EXPECT_EQ(StatusOf(Exchange(port_, "GET /api/v1/workers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + t +
                                         "\r\nConnection: close\r\n\r\n")),
            200);
  auto dashboard = Ctl({"dashboard"});
  EXPECT_EQ(dashboard.out, "http://127.0.0.1:" + std::to_string(port_) + "/?token=" + t + "\n");
}

TEST_F(HttpTest, MalformedHugeAndSlowRequestsLeaveTheServerAnswering) {
  UpWithHttp(1);
  EXPECT_EQ(StatusOf(Exchange(port_, std::string("\x16\x03\x01\x02\x00garbage\r\n\r\n", 16))), 400);
  EXPECT_EQ(StatusOf(Exchange(port_, "NOT HTTP AT ALL\r\n\r\n")), 400);
  EXPECT_EQ(StatusOf(Exchange(port_, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n")),
            431);
  EXPECT_EQ(StatusOf(Exchange(port_, "POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")), 400)
      << "no request bodies";
  EXPECT_EQ(StatusOf(Exchange(port_, "DELETE /api/v1/runs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")), 405);
  EXPECT_EQ(StatusOf(Get(port_, "/../../etc/passwd")), 400);
  EXPECT_EQ(StatusOf(Get(port_, "/api/v1/runs/%zz")), 400);
  EXPECT_EQ(StatusOf(Get(port_, "/nope")), 404);
  // Slowloris: connections that send half a request and wait. Others are still served, and
  // the server drops the slow ones once their request time (5 s) is up.
  std::vector<int> slow;
  for (int i = 0; i < 20; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const std::string half = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
    ::send(fd, half.data(), half.size(), MSG_NOSIGNAL);
    slow.push_back(fd);
  }
  EXPECT_EQ(StatusOf(Get(port_, "/metrics")), 200);
  for (int fd : slow) {
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    EXPECT_EQ(::recv(fd, &c, 1, 0), 0) << "closed by the server";
    ::close(fd);
  }
  EXPECT_EQ(StatusOf(Get(port_, "/api/v1/workers")), 200);
}

}  // namespace
}  // namespace dd2
