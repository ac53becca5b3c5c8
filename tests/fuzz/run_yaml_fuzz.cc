// libFuzzer target: run.yaml parsing and validation, sweep blocks included (the text dd2ctl
// and the coordinator accept from users). Seeds: tests/fuzz/corpus/run_yaml, examples/ and the
// malformed files under tests/data.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/run_spec.h"
#include "common/sweep.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  (void)dd2::ParseRunSpec(text, "fuzz.yaml");
  (void)dd2::ParseSweep(text, "fuzz.yaml");
  return 0;
}
