#include "training/data.h"

#include <zlib.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace dd2 {

absl::StatusOr<torch::Tensor> ReadIdxGz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open (is dataset-fashion-mnist installed? ",
                                            "run ops/install-deps.sh)"));
  }
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) bytes.insert(bytes.end(), buf, buf + n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  const bool failed = n < 0 || (err != Z_OK && err != Z_STREAM_END);
  std::string what = failed ? msg : "";
  gzclose(f);
  if (failed) return absl::DataLossError(absl::StrCat(path, ": corrupt gzip stream: ", what));
  auto be32 = [&](size_t at) {
    return (uint32_t(bytes[at]) << 24) | (uint32_t(bytes[at + 1]) << 16) | (uint32_t(bytes[at + 2]) << 8) |
           uint32_t(bytes[at + 3]);
  };
  if (bytes.size() < 8) return absl::DataLossError(absl::StrCat(path, ": too short for an IDX header"));
  const uint32_t magic = be32(0);
  std::vector<int64_t> shape;
  size_t header = 0;
  if (magic == 2049) {
    shape = {be32(4)};
    header = 8;
  } else if (magic == 2051) {
    if (bytes.size() < 16) return absl::DataLossError(absl::StrCat(path, ": truncated IDX header"));
    shape = {be32(4), be32(8), be32(12)};
    header = 16;
  } else {
    return absl::DataLossError(absl::StrCat(path, ": not an IDX file (magic ", magic, ")"));
  }
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  if (bytes.size() != header + static_cast<size_t>(count)) {
    return absl::DataLossError(absl::StrCat(path, ": expected ", header + count, " bytes, got ", bytes.size()));
  }
  return torch::from_blob(bytes.data() + header, shape, torch::kUInt8).clone();
}

absl::StatusOr<ImageSet> LoadFashionMnist(const std::string& dir, const std::string& split,
                                          int64_t limit) {
  if (split != "train" && split != "test") {
    return absl::InvalidArgumentError(absl::StrCat("split must be train or test, got '", split, "'"));
  }
  const std::string prefix = split == "train" ? "train" : "t10k";
  DD2_ASSIGN_OR_RETURN(torch::Tensor images, ReadIdxGz(absl::StrCat(dir, "/", prefix, "-images-idx3-ubyte.gz")));
  DD2_ASSIGN_OR_RETURN(torch::Tensor labels, ReadIdxGz(absl::StrCat(dir, "/", prefix, "-labels-idx1-ubyte.gz")));
  if (images.dim() != 3 || labels.dim() != 1 || images.size(0) != labels.size(0)) {
    return absl::DataLossError(absl::StrCat(dir, ": images and labels of split ", split, " do not match"));
  }
  if (limit > 0 && limit < images.size(0)) {
    images = images.slice(0, 0, limit);
    labels = labels.slice(0, 0, limit);
  }
  return ImageSet{images.unsqueeze(1).to(torch::kFloat32) / 255.0, labels.to(torch::kInt64)};
}

}  // namespace dd2
