// Reads the tensors of a file that PyTorch's torch.save wrote (the zip format of PyTorch >= 1.6):
// a small unpickler for what state dicts and plain tensor dicts use (dicts, OrderedDicts with
// `_metadata`, tuples, lists, scalars, strings, torch._utils._rebuild_tensor_v2 and
// _rebuild_parameter, typed storages by persistent id) on LibTorch's zip reader. Objects of
// other classes (an argparse Namespace beside the weights) are kept opaque and skipped, never
// constructed. LibTorch's own torch::pickle_load cannot build an OrderedDict that carries
// attributes, which every torch.save(model.state_dict()) writes.
// Hostile files get an error naming the file: bounds, memo and stack are checked, and every
// tensor's extent must lie inside its storage. Stateless; thread-safe.
#ifndef DD2_TRAINING_TORCH_FILE_H_
#define DD2_TRAINING_TORCH_FILE_H_

#include <functional>
#include <map>
#include <string>

#include <torch/torch.h>

#include "absl/status/statusor.h"

namespace dd2 {

using TensorDict = std::map<std::string, torch::Tensor>;

// The tensors of a torch.save'd dict, by key: for a checkpoint whose top level holds the state
// dict under "model", "module" or "state_dict" (the first present, as LlamaGen's sampler looks
// them up), that state dict; otherwise the top-level dict's tensor entries. Floating-point
// tensors keep their dtype. InvalidArgument naming the file for anything unreadable.
absl::StatusOr<TensorDict> ReadTorchStateDict(const std::string& path);

// The storage record data/<key> as a 1-D tensor of `dtype` (its whole length), or an error.
using StorageReader = std::function<absl::StatusOr<torch::Tensor>(const std::string& key, torch::ScalarType dtype)>;

// The same from the bytes of data.pkl and a storage reader (tests and fuzzing use this). Errors
// name `what` (the file) and the byte offset in the pickle.
absl::StatusOr<TensorDict> UnpickleStateDict(const std::string& what, const std::string& pickle,
                                             const StorageReader& storage);

}  // namespace dd2

#endif  // DD2_TRAINING_TORCH_FILE_H_
