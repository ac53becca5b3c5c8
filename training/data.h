// Fashion-MNIST from the gzip'd IDX files of Debian's dataset-fashion-mnist
// (/usr/share/datasets/fashion-mnist). Missing or corrupt files are NotFound/DataLoss errors
// naming the path. Thread-compatible.
#ifndef DD2_TRAINING_DATA_H_
#define DD2_TRAINING_DATA_H_

#include <string>

#include <torch/torch.h>

#include "absl/status/statusor.h"

namespace dd2 {

inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

struct ImageSet {
  torch::Tensor images;  // [N, 1, 28, 28] float32 in [0, 1]
  torch::Tensor labels;  // [N] int64 in 0..9
};

// split: "train" (60k) or "test" (10k). `limit` > 0 keeps the first `limit` examples.
absl::StatusOr<ImageSet> LoadFashionMnist(const std::string& dir, const std::string& split,
                                          int64_t limit = 0);

// Reads one gzip'd IDX file: images (magic 2051) or labels (magic 2049), as uint8.
absl::StatusOr<torch::Tensor> ReadIdxGz(const std::string& path);

}  // namespace dd2

#endif  // DD2_TRAINING_DATA_H_
