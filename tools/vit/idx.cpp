// Fashion-MNIST in its original IDX format, gzip-compressed, read with zlib.
//
// IDX: a big-endian header (magic 0x00000803 for uint8 images [n, rows, cols], 0x00000801
// for uint8 labels [n]) followed by the raw bytes. Every check names the file.
#include <zlib.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "vit.h"

namespace vit {
namespace {

// The whole decompressed content of a .gz file.
std::vector<std::uint8_t> read_gz(const std::string& path) {
  errno = 0;
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    throw std::runtime_error("cannot open " + path + ": " +
                             (errno != 0 ? std::strerror(errno) : "out of memory"));
  }
  std::vector<std::uint8_t> bytes;
  std::array<std::uint8_t, 1 << 16> chunk{};
  for (;;) {
    const int got = gzread(file, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (got < 0) {
      int code = 0;
      const std::string message = gzerror(file, &code);
      gzclose(file);
      throw std::runtime_error(path + ": corrupt gzip data (" + message + ")");
    }
    if (got == 0) break;
    bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + got);
  }
  // gzread returns 0 both at the end and on a truncated stream; gzclose tells them apart.
  if (gzclose(file) != Z_OK) throw std::runtime_error(path + ": truncated or corrupt gzip file");
  return bytes;
}

std::uint32_t big_endian(const std::vector<std::uint8_t>& bytes, std::size_t at) {
  return (std::uint32_t{bytes[at]} << 24) | (std::uint32_t{bytes[at + 1]} << 16) |
         (std::uint32_t{bytes[at + 2]} << 8) | std::uint32_t{bytes[at + 3]};
}

// Checks the header (magic and the sizes it announces against the file length) and returns
// the dimensions.
std::vector<std::uint32_t> idx_dims(const std::vector<std::uint8_t>& bytes, std::uint32_t magic,
                                    const std::string& path) {
  const std::size_t rank = magic & 0xff;
  if (bytes.size() < 4 || big_endian(bytes, 0) != magic) {
    char expected_magic[16];
    std::snprintf(expected_magic, sizeof expected_magic, "0x%08x", magic);
    throw std::runtime_error(path + ": not an IDX file of uint8 rank " + std::to_string(rank) +
                             " (expected magic " + expected_magic + ")");
  }
  if (bytes.size() < 4 + 4 * rank) throw std::runtime_error(path + ": truncated IDX header");
  std::vector<std::uint32_t> dims;
  std::size_t expected = 4 + 4 * rank;
  std::size_t payload = 1;
  for (std::size_t i = 0; i < rank; ++i) {
    dims.push_back(big_endian(bytes, 4 + 4 * i));
    payload *= dims.back();
  }
  expected += payload;
  if (bytes.size() != expected) {
    throw std::runtime_error(path + ": IDX header announces " + std::to_string(expected) +
                             " bytes, the file has " + std::to_string(bytes.size()));
  }
  return dims;
}

}  // namespace

Dataset load_fashion_mnist(const std::string& dir, bool train, std::int64_t limit) {
  const std::string prefix = dir + "/" + (train ? "train" : "t10k");
  const std::string images_path = prefix + "-images-idx3-ubyte.gz";
  const std::string labels_path = prefix + "-labels-idx1-ubyte.gz";

  const std::vector<std::uint8_t> images = read_gz(images_path);
  const std::vector<std::uint32_t> image_dims = idx_dims(images, 0x00000803, images_path);
  if (image_dims[1] != kImageSide || image_dims[2] != kImageSide) {
    throw std::runtime_error(images_path + ": images are " + std::to_string(image_dims[1]) +
                             "x" + std::to_string(image_dims[2]) + ", expected 28x28");
  }
  const std::vector<std::uint8_t> labels = read_gz(labels_path);
  const std::vector<std::uint32_t> label_dims = idx_dims(labels, 0x00000801, labels_path);
  if (label_dims[0] != image_dims[0]) {
    throw std::runtime_error(labels_path + ": " + std::to_string(label_dims[0]) +
                             " labels for " + std::to_string(image_dims[0]) + " images in " +
                             images_path);
  }

  Dataset data;
  data.n = image_dims[0];
  if (limit > 0 && limit < data.n) data.n = limit;
  const std::size_t image_bytes = kImageSide * kImageSide;
  data.pixels.assign(images.begin() + 16, images.begin() + 16 + data.n * image_bytes);
  data.labels.assign(labels.begin() + 8, labels.begin() + 8 + data.n);
  for (std::int64_t i = 0; i < data.n; ++i) {
    if (data.labels[i] >= kClasses) {
      throw std::runtime_error(labels_path + ": label " + std::to_string(data.labels[i]) +
                               " of image " + std::to_string(i) + " is not in [0, 10)");
    }
  }
  return data;
}

}  // namespace vit
