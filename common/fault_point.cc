#include "common/fault_point.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"

namespace dd2 {

void FaultPoint(std::string_view name, std::string_view detail) {
  const char* dir = std::getenv("DD2_FAULT_DIR");
  if (dir == nullptr || *dir == '\0') return;
  const std::string point(name);  // this absl's StrCat takes no std::string_view
  const std::string armed = absl::StrCat(dir, "/arm-", point);
  const std::string hit = absl::StrCat(dir, "/hit-", point, "-", ::getpid());
  if (std::rename(armed.c_str(), hit.c_str()) != 0) return;  // not armed, or another process claimed it
  std::ofstream(hit) << ::getpid() << " " << ::getppid() << " " << detail << "\n" << std::flush;
  const char* pause = std::getenv("DD2_FAULT_PAUSE_MS");
  std::this_thread::sleep_for(std::chrono::milliseconds(pause ? std::atoll(pause) : 3000));
}

}  // namespace dd2
