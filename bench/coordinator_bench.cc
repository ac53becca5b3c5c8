// coordinator_bench: measures a real dd2-coordinator process against N simulated workers, all
// DEALER sockets in this process on 127.0.0.1.
//   Phase 1 (heartbeats): every worker keeps one heartbeat in flight for --seconds; reports
//   acknowledged heartbeats per second and the send-to-ack latency.
//   Phase 2 (job transitions): a run of --jobs sleep jobs; each simulated worker answers an
//   Assign at once with AttemptStarted and AttemptFinished. Reports state transitions per second
//   (assigned, running, succeeded: 3 per job, each committed to SQLite) and the
//   AttemptFinished-to-FinishedAck latency.
// Prints one Markdown table row per worker count (bench/coordinator.sh prints the header).
// With --open-loop-hz H instead: every worker heartbeats at H per second on its own schedule
// (spread evenly, whether or not the last was answered) for --seconds, after 2 s of warm-up,
// while jobs flow (a simulated worker finishes an assigned sleep job after 0.5x to 1.5x
// --job-seconds), and, with --poll-rps R, a thread
// GETs /metrics and /api/v1/status alternately R times per second from the coordinator's HTTP
// endpoint. Reports the heartbeat send-to-ack latency, jobs finished and the HTTP latency.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <zmq.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/client.h"
#include "common/home.h"
#include "common/protocol.h"
#include "common/run_spec.h"
#include "common/transport.h"

namespace dd2 {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

struct Sim {
  std::string id;
  zmq::socket_t socket;
};

// A run `name` of `jobs` sleep jobs with distinct params (identical ones would reuse one another).
proto::Envelope SleepJobsSubmission(const std::string& name, int jobs) {
  std::string yaml = "name: " + name + "\njobs:\n";
  for (int j = 0; j < jobs; ++j) absl::StrAppend(&yaml, "  - {name: j", j, ", type: sleep, params: {steps: ", j + 1, "}}\n");
  proto::Envelope submit;
  *submit.mutable_submit()->mutable_spec() = *ParseRunSpec(yaml, name + ".yaml");
  submit.mutable_submit()->set_submission_id(name);
  return submit;
}

// One GET on a fresh connection; the milliseconds until the server closed it, or -1. The
// response (status line, headers, body) goes to `response` when given.
double TimedGet(int port, const std::string& path, std::string* response = nullptr) {
  const auto start = Clock::now();
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
  ok = ok && ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
  char buf[65536];
  ssize_t n = 0, total = 0;
  while (ok && (n = ::recv(fd, buf, sizeof buf, 0)) > 0) {
    total += n;
    if (response != nullptr) response->append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return ok && total > 0 ? Ms(Clock::now() - start) : -1;
}

// CPU time the hypervisor gave to others ("steal", /proc/stat), in clock ticks of all CPUs, and
// all ticks: a latency measured while a share of the CPUs was stolen says more about the host
// than about the coordinator.
std::pair<int64_t, int64_t> StealTicks() {
  std::ifstream stat("/proc/stat");
  std::string cpu;
  int64_t v[8] = {};
  stat >> cpu;
  for (auto& x : v) stat >> x;
  int64_t all = 0;
  for (auto x : v) all += x;
  return {v[7], all};
}

template <typename Pump, typename Send>
bool OpenLoop(std::vector<Sim>& sims, Pump& pump, Send& send, const std::string& home, const std::string& endpoint,
              int workers, int welcomed, int jobs, double seconds, double hz, double poll_rps,
              const std::vector<std::string>& poll_pages, double job_seconds,
              const std::string& metrics_out) {
  // Jobs flow: each simulated worker finishes what it is assigned 0.5x to 1.5x job_seconds later.
  CoordinatorClient client(endpoint, 10000, 1);
  if (!client.Call(SleepJobsSubmission("flow", jobs)).ok()) return false;
  const auto start = Clock::now();
  const auto measure_from = start + std::chrono::seconds(2);  // the first assignments, at once, are a warm-up
  // HTTP polling on its own thread.
  std::atomic<bool> stop{false};
  std::vector<double> http_latency;
  int http_failed = 0;
  std::thread poller;
  if (poll_rps > 0) {
    auto address = ReadHttpAddress(home);
    if (!address.ok()) return false;
    const int port = std::stoi(address->substr(address->find(':') + 1));
    poller = std::thread([&, port] {
      auto next = Clock::now();
      for (int k = 0; !stop; ++k) {
        const double ms = TimedGet(port, poll_pages[k % poll_pages.size()]);
        if (ms < 0) ++http_failed; else if (Clock::now() >= measure_from) http_latency.push_back(ms);
        next += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / poll_rps));
        std::this_thread::sleep_until(next);
      }
    });
  }
  const auto period = std::chrono::duration<double>(1.0 / hz);
  std::vector<Clock::time_point> due(sims.size());
  for (size_t i = 0; i < sims.size(); ++i) {
    due[i] = start + std::chrono::duration_cast<Clock::duration>(period * (static_cast<double>(i) / sims.size()));
  }
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < sims.size(); ++i) index[sims[i].id] = i;
  std::map<std::pair<size_t, uint64_t>, Clock::time_point> inflight;
  std::vector<double> hb_latency;
  std::multimap<Clock::time_point, std::pair<size_t, std::string>> finish_at;  // when, (worker, attempt)
  uint64_t next_id = 1;
  int finished = 0;
  std::mt19937 rng(7);  // job lengths 0.5-1.5 s, so finishes do not all land at once
  const auto end = measure_from + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::pair<int64_t, int64_t> steal_from{-1, 0};
  while (Clock::now() < end) {
    if (steal_from.first < 0 && Clock::now() >= measure_from) steal_from = StealTicks();
    pump(1, [&](Sim& s, const proto::Envelope& e) {
      const size_t i = index[s.id];
      if (e.has_heartbeat_ack()) {
        auto it = inflight.find({i, e.request_id()});
        if (it == inflight.end()) return;
        if (it->second >= measure_from) hb_latency.push_back(Ms(Clock::now() - it->second));
        inflight.erase(it);
      } else if (e.has_assign()) {
        proto::Envelope started;
        started.mutable_attempt_started()->set_attempt_id(e.assign().attempt_id());
        send(s, started);
        const auto length = std::chrono::duration<double>(job_seconds * (0.5 + (rng() % 1000) / 1000.0));
        finish_at.insert({Clock::now() + std::chrono::duration_cast<Clock::duration>(length), {i, e.assign().attempt_id()}});
      } else if (e.has_finished_ack()) {
        ++finished;
      }
    });
    const auto now = Clock::now();
    for (size_t i = 0; i < sims.size(); ++i) {
      if (now < due[i]) continue;
      proto::Envelope env;
      env.set_request_id(next_id);
      env.mutable_heartbeat()->set_worker_id(sims[i].id);
      inflight[{i, next_id++}] = now;
      send(sims[i], env);
      due[i] += std::chrono::duration_cast<Clock::duration>(period);
    }
    while (!finish_at.empty() && finish_at.begin()->first <= now) {
      auto [i, attempt] = finish_at.begin()->second;
      finish_at.erase(finish_at.begin());
      proto::Envelope done;
      done.mutable_attempt_finished()->set_attempt_id(attempt);
      send(sims[i], done);
    }
  }
  stop = true;
  if (poller.joinable()) poller.join();
  if (!metrics_out.empty()) {  // the coordinator's own histograms (commits, scheduling passes) of the run
    auto address = ReadHttpAddress(home);
    std::string response;
    if (!address.ok() || TimedGet(std::stoi(address->substr(address->find(':') + 1)), "/metrics", &response) < 0) {
      return false;
    }
    std::ofstream(metrics_out) << response;
  }
  const double secs = Ms(Clock::now() - measure_from) / 1000.0;
  const auto steal_to = StealTicks();
  const double steal = steal_to.second > steal_from.second
                           ? 100.0 * static_cast<double>(steal_to.first - steal_from.first) /
                                 static_cast<double>(steal_to.second - steal_from.second)
                           : 0.0;
  std::printf("| %d | %d | %.0f | %s | %.0f | %.2f | %.2f | %zu | %d | %s | %s | %.0f |\n", workers, welcomed, hz,
              poll_rps > 0 ? absl::StrCat(poll_rps, " req/s of ", absl::StrJoin(poll_pages, " ")).c_str() : "none",
              static_cast<double>(hb_latency.size()) / secs, Percentile(hb_latency, 0.5), Percentile(hb_latency, 0.99),
              inflight.size(), finished, poll_rps > 0 ? absl::StrFormat("%zu (%d failed)", http_latency.size(), http_failed).c_str() : "-",
              poll_rps > 0 ? absl::StrFormat("%.2f / %.2f", Percentile(http_latency, 0.5), Percentile(http_latency, 0.99)).c_str() : "-",
              steal);
  return welcomed == workers && http_failed == 0;
}

int Main(int argc, char** argv) {
  int workers = 100, jobs = 2000;
  double seconds = 5;
  std::string bin_dir;
  CLI::App app{"coordinator_bench"};
  app.add_option("--workers", workers)->capture_default_str();
  app.add_option("--jobs", jobs)->capture_default_str();
  app.add_option("--seconds", seconds)->capture_default_str();
  app.add_option("--bin-dir", bin_dir)->required();
  double open_loop_hz = 0, poll_rps = 0, job_seconds = 10;
  std::string metrics_out;
  app.add_option("--open-loop-hz", open_loop_hz, "heartbeats per second per worker, open loop (0: the closed-loop phases)");
  app.add_option("--poll-rps", poll_rps, "HTTP requests per second during the open-loop phase");
  // By default what a Prometheus scrape and the dashboard's home page (and header) read.
  std::vector<std::string> poll_pages = {"/metrics", "/api/v1/runs", "/api/v1/workers", "/api/v1/sweeps"};
  app.add_option("--poll-pages", poll_pages, "the pages polled in turn")->delimiter(',')->capture_default_str();
  app.add_option("--job-seconds", job_seconds, "mean length of a simulated job in the open-loop phase (0.5x to 1.5x)")
      ->capture_default_str();
  app.add_option("--metrics-out", metrics_out, "open loop: write the coordinator's /metrics at the end to this file");
  CLI11_PARSE(app, argc, argv);

  rlimit files{};
  getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  setrlimit(RLIMIT_NOFILE, &files);

  char tmpl[] = "/tmp/dd2bench.XXXXXX";
  const std::string home = mkdtemp(tmpl);
  pid_t coord = fork();
  if (coord == 0) {
    std::string exe = bin_dir + "/dd2-coordinator";
    execl(exe.c_str(), exe.c_str(), "--home", home.c_str(), "--heartbeat-interval-ms", "1000",
          "--lost-after-ms", "600000", static_cast<char*>(nullptr));
    _exit(127);
  }
  std::string endpoint;
  for (int i = 0; i < 200 && endpoint.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    if (auto ep = ReadEndpoint(home); ep.ok()) endpoint = *ep;
  }
  if (endpoint.empty()) {
    std::fprintf(stderr, "coordinator did not start\n");
    return 1;
  }

  zmq::context_t ctx(1);
  ctx.set(zmq::ctxopt::max_sockets, 65536);
  std::vector<Sim> sims;
  for (int i = 0; i < workers; ++i) {
    Sim s{absl::StrCat("sim-", i), zmq::socket_t(ctx, zmq::socket_type::dealer)};
    ConnectDealer(s.socket, endpoint, s.id, /*immediate=*/false).IgnoreError();
    sims.push_back(std::move(s));
  }
  auto send = [](Sim& s, proto::Envelope env) {
    env.set_sender(s.id);
    SendFrames(s.socket, {EncodeEnvelope(std::move(env))}).IgnoreError();
  };
  std::vector<zmq::pollitem_t> items;
  for (auto& s : sims) items.push_back({s.socket.handle(), 0, ZMQ_POLLIN, 0});
  // Calls on_message for everything that arrives within `ms`.
  auto pump = [&](int ms, const std::function<void(Sim&, const proto::Envelope&)>& on_message) {
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(ms));
    for (size_t i = 0; i < sims.size(); ++i) {
      if (!(items[i].revents & ZMQ_POLLIN)) continue;
      while (true) {
        auto frames = RecvFrames(sims[i].socket);
        if (!frames.ok() || !frames->has_value()) break;
        auto env = DecodeEnvelope((*frames)->back());
        if (env.ok()) on_message(sims[i], *env);
      }
    }
  };

  // Register everyone.
  for (auto& s : sims) {
    proto::Envelope env;
    auto* h = env.mutable_hello();
    h->set_worker_id(s.id);
    h->set_host("bench");
    h->set_device("cpu");
    h->set_slots(1);
    send(s, env);
  }
  int welcomed = 0;
  const auto reg_deadline = Clock::now() + std::chrono::seconds(60);
  while (welcomed < workers && Clock::now() < reg_deadline) {
    pump(50, [&](Sim&, const proto::Envelope& e) { welcomed += e.has_welcome(); });
  }

  if (open_loop_hz > 0) {
    const bool ok = OpenLoop(sims, pump, send, home, endpoint, workers, welcomed, jobs, seconds, open_loop_hz, poll_rps, poll_pages,
                             job_seconds, metrics_out);
    kill(coord, SIGTERM);
    waitpid(coord, nullptr, 0);
    std::error_code ec;
    std::filesystem::remove_all(home, ec);
    return ok ? 0 : 1;
  }

  // Phase 1: heartbeats, one in flight per worker.
  std::map<std::pair<size_t, uint64_t>, Clock::time_point> inflight;
  std::vector<double> hb_latency;
  uint64_t next_id = 1;
  auto heartbeat = [&](size_t i) {
    proto::Envelope env;
    env.set_request_id(next_id);
    env.mutable_heartbeat()->set_worker_id(sims[i].id);
    inflight[{i, next_id}] = Clock::now();
    ++next_id;
    send(sims[i], env);
  };
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < sims.size(); ++i) index[sims[i].id] = i;
  for (size_t i = 0; i < sims.size(); ++i) heartbeat(i);
  const auto hb_start = Clock::now();
  const auto hb_end = hb_start + std::chrono::duration<double>(seconds);
  while (Clock::now() < hb_end) {
    pump(10, [&](Sim& s, const proto::Envelope& e) {
      if (!e.has_heartbeat_ack()) return;
      size_t i = index[s.id];
      auto it = inflight.find({i, e.request_id()});
      if (it == inflight.end()) return;
      hb_latency.push_back(Ms(Clock::now() - it->second));
      inflight.erase(it);
      if (Clock::now() < hb_end) heartbeat(i);
    });
  }
  const double hb_rate = static_cast<double>(hb_latency.size()) / Ms(Clock::now() - hb_start) * 1000.0;

  // Phase 2: job transitions.
  const proto::Envelope submit = SleepJobsSubmission("bench", jobs);
  CoordinatorClient client(endpoint, 10000, 1);
  const auto job_start = Clock::now();
  if (!client.Call(submit).ok()) {
    std::fprintf(stderr, "submit failed\n");
    return 1;
  }
  std::map<std::string, Clock::time_point> finishing;
  std::vector<double> finish_latency;
  const auto job_deadline = Clock::now() + std::chrono::seconds(300);
  while (static_cast<int>(finish_latency.size()) < jobs && Clock::now() < job_deadline) {
    pump(10, [&](Sim& s, const proto::Envelope& e) {
      if (e.has_assign()) {
        proto::Envelope started;
        started.mutable_attempt_started()->set_attempt_id(e.assign().attempt_id());
        send(s, started);
        proto::Envelope finished;
        finished.mutable_attempt_finished()->set_attempt_id(e.assign().attempt_id());
        finishing[e.assign().attempt_id()] = Clock::now();
        send(s, finished);
      } else if (e.has_finished_ack()) {
        auto it = finishing.find(e.finished_ack().attempt_id());
        if (it == finishing.end()) return;
        finish_latency.push_back(Ms(Clock::now() - it->second));
        finishing.erase(it);
      }
    });
  }
  const double job_secs = Ms(Clock::now() - job_start) / 1000.0;
  const double transitions = 3.0 * static_cast<double>(finish_latency.size()) / job_secs;

  std::printf("| %d | %d | %.0f | %.2f | %.2f | %zu | %.0f | %.2f | %.2f |\n", workers, welcomed, hb_rate,
              Percentile(hb_latency, 0.5), Percentile(hb_latency, 0.99), finish_latency.size(),
              transitions, Percentile(finish_latency, 0.5), Percentile(finish_latency, 0.99));
  kill(coord, SIGTERM);
  waitpid(coord, nullptr, 0);
  std::error_code ec;
  std::filesystem::remove_all(home, ec);
  return finish_latency.size() == static_cast<size_t>(jobs) && welcomed == workers ? 0 : 1;
}

}  // namespace
}  // namespace dd2

int main(int argc, char** argv) { return dd2::Main(argc, argv); }
