#include "training/png.h"

#include <png.h>

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace dd2 {

namespace {

absl::Status WritePng(const std::string& path, int width, int height, int channels, const std::vector<uint8_t>& pixels) {
  if (pixels.size() != static_cast<size_t>(width) * height * channels) {
    return absl::InvalidArgumentError("pixel buffer does not match the image size");
  }
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    return absl::InternalError(absl::StrCat("libpng failed writing ", tmp));
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, width, height, 8, channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < height; ++y) {
    png_write_row(png, const_cast<png_bytep>(pixels.data() + static_cast<size_t>(y) * width * channels));
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return absl::UnavailableError(absl::StrCat("rename to ", path));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteGrayPng(const std::string& path, int width, int height, const std::vector<uint8_t>& pixels) {
  return WritePng(path, width, height, 1, pixels);
}

absl::Status WriteRgbPng(const std::string& path, int width, int height, const std::vector<uint8_t>& pixels) {
  return WritePng(path, width, height, 3, pixels);
}

}  // namespace dd2
