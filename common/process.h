// Process helpers for code that has just forked. Async-signal-unsafe work (allocation) happens
// before the exec; call only in a child that will exec or exit.
#ifndef DD2_COMMON_PROCESS_H_
#define DD2_COMMON_PROCESS_H_

#include <string>
#include <vector>

namespace dd2 {

// execv(argv[0], argv) without a shell; on failure _exit(127).
[[noreturn]] void ExecOrExit(const std::vector<std::string>& argv);

}  // namespace dd2

#endif  // DD2_COMMON_PROCESS_H_
