// Writes 8-bit grayscale and RGB PNG files with libpng. Thread-compatible.
#ifndef DD2_TRAINING_PNG_H_
#define DD2_TRAINING_PNG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace dd2 {

// `pixels` is row-major, width x height. Written to a temp file, then renamed.
absl::Status WriteGrayPng(const std::string& path, int width, int height, const std::vector<uint8_t>& pixels);
// `pixels` is row-major, width x height x 3 (R, G, B).
absl::Status WriteRgbPng(const std::string& path, int width, int height, const std::vector<uint8_t>& pixels);

}  // namespace dd2

#endif  // DD2_TRAINING_PNG_H_
