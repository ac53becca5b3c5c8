// libFuzzer target: files dd2 reads that someone else may have written: a checkpoint manifest
// (the worker reads it at resume) and a CURVE key file (the coordinator reads the authorized
// folder while it runs). The input is written to a file, then read both ways.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/checkpoint_manifest.h"
#include "common/curve_keys.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    std::string d = (std::filesystem::temp_directory_path() / "dd2-files-fuzz-XXXXXX").string();
    return std::string(::mkdtemp(d.data()));
  }();
  const std::string checkpoint = dir + "/ckpt-000000000010.pt";
  const std::string manifest = dd2::ManifestPathFor(checkpoint);
  std::ofstream(manifest, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), size);
  (void)dd2::ReadManifest(checkpoint);
  (void)dd2::ListCheckpoints(dir);
  (void)dd2::ReadPublicKeyFile(manifest);
  return 0;
}
