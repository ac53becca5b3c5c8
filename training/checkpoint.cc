#include "training/checkpoint.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/home.h"

namespace dd2 {

absl::Status SaveCheckpoint(const std::string& path, const NamedModules& modules,
                            const NamedOptimizers& optimizers, int64_t step) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create the folder of ", path, ": ", ec.message()));
  AtomicFileWriter file(path);
  try {
    torch::serialize::OutputArchive archive;
    for (const auto& [name, module] : modules) {
      torch::serialize::OutputArchive sub;
      module->save(sub);
      archive.write("module/" + name, sub);
    }
    for (const auto& [name, optimizer] : optimizers) {
      torch::serialize::OutputArchive sub;
      optimizer->save(sub);
      archive.write("optimizer/" + name, sub);
    }
    archive.write("step", torch::tensor(step));
    // Streamed through our writer, which keeps the first error and claims every byte written:
    // LibTorch's own file writer throws from a destructor when a write comes up short (a full
    // disk), which aborts the process instead of failing this call.
    archive.save_to([&file](const void* data, size_t n) -> size_t {
      file.Write(data, n);
      return n;
    });
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot write checkpoint ", path, ": ", e.what()));
  }
  if (absl::Status st = file.Commit(); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat("checkpoint of step ", step, ": ", st.message()));
  }
  return absl::OkStatus();
}

namespace {

torch::Device TargetDevice(const NamedModules& modules, const NamedOptimizers& optimizers) {
  for (const auto& [name, module] : modules) {
    for (const auto& p : module->parameters()) return p.device();
  }
  for (const auto& [name, optimizer] : optimizers) {
    for (const auto& group : optimizer->param_groups()) {
      for (const auto& p : group.params()) return p.device();
    }
  }
  return torch::kCPU;
}

}  // namespace

absl::StatusOr<int64_t> LoadCheckpoint(const std::string& path, const NamedModules& modules,
                                       const NamedOptimizers& optimizers) {
  if (!std::filesystem::exists(path)) return absl::NotFoundError(absl::StrCat("no checkpoint at ", path));
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path, TargetDevice(modules, optimizers));
    for (const auto& [name, module] : modules) {
      torch::serialize::InputArchive sub;
      archive.read("module/" + name, sub);
      module->load(sub);
    }
    for (const auto& [name, optimizer] : optimizers) {
      torch::serialize::InputArchive sub;
      archive.read("optimizer/" + name, sub);
      optimizer->load(sub);
    }
    torch::Tensor step;
    archive.read("step", step);
    return step.item<int64_t>();
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("cannot read checkpoint ", path, ": ", e.what()));
  }
}

}  // namespace dd2
