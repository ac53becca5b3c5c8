// libFuzzer target: the coordinator's frame handler on an in-memory store. An input is a
// sequence of frames, each `role (1 byte) | length (2 bytes, little-endian) | bytes`, the last
// one taking whatever is left; between frames the fake clock moves and the service schedules
// and ticks, as the loop does. Seeds (tests/fuzz/corpus/frames) are real message sequences
// written by frames_seeds.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "common/clock.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/job_store.h"

namespace {

const std::string& Home() {
  static const std::string home = [] {
    std::string dir = (std::filesystem::temp_directory_path() / "dd2-frames-fuzz-XXXXXX").string();
    return std::string(::mkdtemp(dir.data()));
  }();
  return home;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dd2::CoordinatorConfig config;
  config.home = Home();
  auto store = dd2::NewInMemoryJobStore();
  dd2::FakeClock clock;
  int64_t sent = 0;
  dd2::CoordinatorService service(config, store.get(), &clock,
                                  [&](const std::string&, const dd2::proto::Envelope&) { ++sent; });
  if (!service.Recover().ok()) return 0;
  size_t at = 0;
  int frame = 0;
  while (at + 3 <= size) {
    const auto role = static_cast<dd2::Role>(data[at] % 6);  // every Role
    size_t length = data[at + 1] | (static_cast<size_t>(data[at + 2]) << 8);
    at += 3;
    if (length > size - at) length = size - at;
    const std::string peer = "peer-" + std::to_string(data[at - 3] >> 4);
    service.HandleFrame(peer, std::string_view(reinterpret_cast<const char*>(data + at), length), role);
    at += length;
    service.Schedule();
    clock.Advance(250 * (++frame % 7));
    service.Tick();
  }
  return 0;
}
