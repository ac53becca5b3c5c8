// libFuzzer target: the envelope decoder every daemon runs on every frame it receives.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto env = dd2::DecodeEnvelope(std::string_view(reinterpret_cast<const char*>(data), size));
  if (env.ok()) (void)dd2::EncodeEnvelope(*env);
  return 0;
}
