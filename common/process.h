// Child processes. ExecOrExit is for code that has just forked: async-signal-unsafe work
// (allocation) happens before the exec; call it only in a child that will exec or exit.
// RunCommand runs a program (no shell) to completion and captures what it printed; it is for
// short commands such as sbatch, squeue and gnuplot. Thread-compatible.
#ifndef DD2_COMMON_PROCESS_H_
#define DD2_COMMON_PROCESS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dd2 {

// execv(argv[0], argv) without a shell; on failure _exit(127).
[[noreturn]] void ExecOrExit(const std::vector<std::string>& argv);

struct CommandResult {
  int exit_code = 0;   // -1 when killed by a signal
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs argv (argv[0] looked up on PATH) with `input` on its stdin, waits at most `timeout_ms`
// (then SIGKILL), and returns its exit code and output. NotFound when argv[0] cannot be run;
// DeadlineExceeded on the timeout. A non-zero exit is a result, not an error.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv, const std::string& input = "",
                                         int64_t timeout_ms = 30000);

}  // namespace dd2

#endif  // DD2_COMMON_PROCESS_H_
