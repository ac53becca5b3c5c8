#include "common/process.h"

#include <unistd.h>

namespace dd2 {

void ExecOrExit(const std::vector<std::string>& argv) {
  std::vector<std::string> copy = argv;
  std::vector<char*> args;
  for (auto& a : copy) args.push_back(a.data());
  args.push_back(nullptr);
  if (!copy.empty()) ::execv(copy[0].c_str(), args.data());
  _exit(127);
}

}  // namespace dd2
