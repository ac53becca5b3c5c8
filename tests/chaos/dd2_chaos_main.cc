// dd2-chaos: the chaos harness from the command line (tests/chaos/chaos.h). Prints the fault
// log and the checks; exit 0 when every planned fault fired and nothing was lost, 1 otherwise.
//   dd2-chaos --seed 7 [--faults 12] [--home DIR] [--bin DIR]
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>

#include "tests/chaos/chaos.h"
#include "tests/testing/test_util.h"

int main(int argc, char** argv) {
  CLI::App app{"dd2-chaos: kill -9 workers and the coordinator during a DD2 pipeline, then check nothing was lost"};
  dd2::chaos::Options o;
  app.add_option("--seed", o.seed, "seed of the fault plan and the victims")->capture_default_str();
  app.add_option("--faults", o.faults, "faults to inject")->check(CLI::Range(7, 100))->capture_default_str();
  app.add_option("--home", o.home, "a fresh folder for the cluster (default: a temporary one, removed after)");
  o.bin_dir = std::filesystem::canonical("/proc/self/exe").parent_path().string();
  app.add_option("--bin", o.bin_dir, "where dd2ctl and the daemons are")->capture_default_str();
  app.add_option("--pause-ms", o.pause_ms, "how long a process waits at an armed fault point")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  dd2::testing::TempDir tmp;
  if (o.home.empty()) o.home = tmp.path() + "/home";
  if (std::filesystem::exists(o.home) && !std::filesystem::is_empty(o.home)) {
    std::cerr << "dd2-chaos: --home " << o.home << " is not empty; give a fresh folder\n";
    return 2;
  }
  const dd2::chaos::Report r = dd2::chaos::Run(o, std::cout);
  return r.failures.empty() ? 0 : 1;
}
