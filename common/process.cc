#include "common/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace dd2 {

void ExecOrExit(const std::vector<std::string>& argv) {
  std::vector<std::string> copy = argv;
  std::vector<char*> args;
  for (auto& a : copy) args.push_back(a.data());
  args.push_back(nullptr);
  if (!copy.empty()) ::execv(copy[0].c_str(), args.data());
  _exit(127);
}

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void CloseAll(int (&fds)[3][2]) {
  for (auto& p : fds) {
    for (int& fd : p) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }
}

}  // namespace

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv, const std::string& input,
                                         int64_t timeout_ms) {
  if (argv.empty()) return absl::InvalidArgumentError("RunCommand: empty command");
  int fds[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};  // stdin, stdout, stderr
  for (auto& p : fds) {
    if (::pipe2(p, O_CLOEXEC) != 0) {
      CloseAll(fds);
      return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
    }
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[0][0], 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1][1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[2][1], 2);
  std::vector<std::string> copy = argv;
  std::vector<char*> args;
  for (auto& a : copy) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, copy[0].c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    CloseAll(fds);
    return absl::NotFoundError(absl::StrCat(argv[0], ": cannot run it (", std::strerror(rc), ")"));
  }
  ::close(fds[0][0]);
  ::close(fds[1][1]);
  ::close(fds[2][1]);
  fds[0][0] = fds[1][1] = fds[2][1] = -1;
  int in = fds[0][1];
  ::fcntl(in, F_SETFL, O_NONBLOCK);
  size_t written = 0;
  if (input.empty()) {
    ::close(in);
    in = fds[0][1] = -1;
  }
  CommandResult result;
  std::string* sinks[2] = {&result.out, &result.err};
  int outs[2] = {fds[1][0], fds[2][0]};
  const int64_t deadline = NowMs() + timeout_ms;
  bool timed_out = false;
  while (outs[0] >= 0 || outs[1] >= 0 || in >= 0) {
    pollfd p[3];
    int n = 0;
    for (int i = 0; i < 2; ++i) {
      if (outs[i] >= 0) p[n++] = {outs[i], POLLIN, 0};
    }
    if (in >= 0) p[n++] = {in, POLLOUT, 0};
    const int64_t left = deadline - NowMs();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    if (::poll(p, n, static_cast<int>(left)) < 0 && errno != EINTR) break;
    for (int k = 0; k < n; ++k) {
      if (p[k].revents == 0) continue;
      if (p[k].fd == in) {
        ssize_t w = ::write(in, input.data() + written, input.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN) written = input.size();
        if (written >= input.size()) {
          ::close(in);
          in = fds[0][1] = -1;
        }
        continue;
      }
      const int i = p[k].fd == outs[0] ? 0 : 1;
      char buf[4096];
      ssize_t r = ::read(outs[i], buf, sizeof(buf));
      if (r > 0) {
        sinks[i]->append(buf, static_cast<size_t>(r));
      } else if (r == 0 || errno != EINTR) {
        ::close(outs[i]);
        outs[i] = -1;
        fds[i + 1][0] = -1;
      }
    }
  }
  if (timed_out) ::kill(pid, SIGKILL);
  CloseAll(fds);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat(argv[0], ": no answer within ", timeout_ms, " ms"));
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace dd2
