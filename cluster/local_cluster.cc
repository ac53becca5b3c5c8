#include "cluster/local_cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "common/client.h"
#include "common/curve_keys.h"
#include "common/home.h"
#include "common/process.h"
#include "common/status_macros.h"

namespace dd2 {
namespace {

namespace fs = std::filesystem;

std::string BinDir() {
  std::vector<char> buf(4096);
  ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return ".";
  return fs::path(std::string(buf.data(), static_cast<size_t>(n))).parent_path().string();
}

int ReadPid(const std::string& pid_file) {
  auto text = ReadFile(pid_file);
  if (!text.ok()) return -1;
  try {
    return std::stoi(std::string(absl::StripAsciiWhitespace(*text)));
  } catch (...) {
    return -1;
  }
}

bool PidAlive(int pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  auto cmd = ReadFile(absl::StrCat("/proc/", pid, "/cmdline"));
  // Guards against a reused pid. "dd2": between fork and exec the daemon still runs as dd2ctl;
  // empty: the kernel shows no arguments while execve is replacing the image.
  if (!cmd.ok() || (!cmd->empty() && cmd->find("dd2") == std::string::npos)) return false;
  auto stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  if (stat.ok()) {
    size_t close = stat->rfind(')');
    if (close != std::string::npos && close + 2 < stat->size() && (*stat)[close + 2] == 'Z') return false;
  }
  return true;
}

absl::StatusOr<int> WaitForPidFile(const std::string& pid_file, int wait_ms) {
  for (int waited = 0; waited < wait_ms; waited += 20) {
    int pid = ReadPid(pid_file);
    if (pid > 0) return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::UnavailableError(absl::StrCat("no pid appeared in ", pid_file));
}

std::string Tail(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return "(no log)";
  return text->size() > 2000 ? text->substr(text->size() - 2000) : *text;
}

// Starts `argv` as a daemon: its own session, double-forked so init reaps it, output appended to
// `log`. The intermediate child writes the daemon's pid to `pid_file`; returns that pid.
absl::StatusOr<int> StartDaemon(const std::vector<std::string>& argv, const std::string& log,
                                const std::string& pid_file, int wait_ms) {
  ::unlink(pid_file.c_str());
  pid_t pid = ::fork();
  if (pid < 0) return absl::UnavailableError("fork failed");
  if (pid == 0) {
    ::setsid();
    pid_t grandchild = ::fork();
    if (grandchild != 0) {
      if (grandchild > 0) WriteFileAtomic(pid_file, absl::StrCat(grandchild, "\n")).IgnoreError();
      _exit(0);
    }
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int null = ::open("/dev/null", O_RDONLY);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    if (null >= 0) ::dup2(null, 0);
    ExecOrExit(argv);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WaitForPidFile(pid_file, wait_ms);
}

}  // namespace

bool PidFileAlive(const std::string& pid_file) { return PidAlive(ReadPid(pid_file)); }

absl::Status Up(const UpOptions& o) {
  std::error_code ec;
  fs::create_directories(o.home, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot create home ", o.home, ": ", ec.message()));
  const std::string bin = BinDir();
  const std::string coord_pid = o.home + "/coordinator.pid";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(o.wait_ms);
  const KeyedHomePaths keyed = KeyedHome(o.home);
  const bool curve = o.curve || fs::exists(keyed.coordinator_key);
  if (curve) DD2_RETURN_IF_ERROR(EnsureKeyedHome(o.home));
  DD2_ASSIGN_OR_RETURN(std::optional<CurveClientKeys> keys, ClientKeys("", "", keyed.ctl_key, keyed.coordinator_pub));
  if (!PidFileAlive(coord_pid)) {
    std::vector<std::string> argv = {bin + "/dd2-coordinator", "--home", o.home};
    if (curve) {
      for (const std::string& a : {std::string("--curve-secret"), keyed.coordinator_key, std::string("--authorized-keys"),
                                   keyed.authorized}) {
        argv.push_back(a);
      }
    }
    for (const auto& a : o.coordinator_args) argv.push_back(a);
    DD2_ASSIGN_OR_RETURN(int pid, StartDaemon(argv, o.home + "/coordinator.log", coord_pid, o.wait_ms));
    (void)pid;
  }
  // Wait until the coordinator answers on the endpoint it recorded.
  while (true) {
    if (!PidFileAlive(coord_pid)) {
      return absl::UnavailableError(absl::StrCat("dd2-coordinator exited at start; ", o.home,
                                                 "/coordinator.log ends with:\n", Tail(o.home + "/coordinator.log")));
    }
    auto ep = ReadEndpoint(o.home);
    if (ep.ok()) {
      CoordinatorClient client(*ep, 500, 1, keys);
      proto::Envelope req;
      req.mutable_status();
      if (client.Call(req).ok()) break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::UnavailableError("dd2-coordinator did not answer in time");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  DD2_ASSIGN_OR_RETURN(std::string endpoint, ReadEndpoint(o.home));
  std::vector<std::string> ids;
  for (int i = 1; i <= o.workers; ++i) {
    const std::string id = absl::StrCat("local-", i);
    ids.push_back(id);
    const std::string dir = o.home + "/workers/" + id;
    fs::create_directories(dir, ec);
    if (PidFileAlive(dir + "/pid")) continue;
    std::vector<std::string> argv = {bin + "/dd2-worker", "--coordinator", endpoint, "--id", id, "--advertise-host", "127.0.0.1",
                                     "--home", o.home, "--slots", std::to_string(o.slots),
                                     "--threads", std::to_string(o.threads)};
    DD2_ASSIGN_OR_RETURN(int pid, StartDaemon(argv, dir + "/worker.log", dir + "/pid", o.wait_ms));
    (void)pid;
  }
  // Wait until every local worker is registered and alive.
  CoordinatorClient client(endpoint, 1000, 2, keys);
  while (true) {
    proto::Envelope req;
    req.mutable_workers();
    auto reply = client.Call(req);
    if (reply.ok()) {
      auto j = nlohmann::json::parse(reply->json_reply().json(), nullptr, false);
      size_t alive = 0;
      for (const auto& w : j["workers"]) {
        for (const auto& id : ids) {
          if (w["id"] == id && w["state"] == "alive" && w["connected"] == true) ++alive;
        }
      }
      if (alive == ids.size()) return absl::OkStatus();
    }
    for (const auto& id : ids) {
      if (!PidFileAlive(o.home + "/workers/" + id + "/pid")) {
        return absl::UnavailableError(absl::StrCat("dd2-worker ", id, " exited at start; its log ends with:\n",
                                                   Tail(o.home + "/workers/" + id + "/worker.log")));
      }
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::UnavailableError("workers did not register in time");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

absl::Status Down(const std::string& home, int grace_ms) {
  std::vector<std::string> pid_files;
  std::error_code ec;
  if (fs::exists(home + "/workers", ec)) {
    for (const auto& entry : fs::directory_iterator(home + "/workers", ec)) {
      pid_files.push_back(entry.path().string() + "/pid");
    }
  }
  // Workers first, so they do not see the coordinator vanish and re-register in a loop.
  for (int phase = 0; phase < 2; ++phase) {
    std::vector<int> pids;
    for (const auto& f : phase == 0 ? pid_files : std::vector<std::string>{home + "/coordinator.pid"}) {
      int pid = ReadPid(f);
      if (PidAlive(pid)) {
        ::kill(pid, SIGTERM);
        pids.push_back(pid);
      }
      ::unlink(f.c_str());
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
    for (int pid : pids) {
      while (PidAlive(pid) && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (PidAlive(pid)) ::kill(pid, SIGKILL);
    }
  }
  return absl::OkStatus();
}

}  // namespace dd2
