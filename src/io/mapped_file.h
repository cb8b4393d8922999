// MappedFile: a whole file mapped read-only into memory (RAII over mmap/munmap).
// Tensor data read from checkpoints points straight into the mapping, so every holder
// of such a pointer also holds a shared_ptr to the MappedFile that owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

namespace bf {

class MappedFile {
 public:
  // Maps a regular file; throws bf::Error naming the file if it cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size_bytes() const { return size_bytes_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  MappedFile() = default;

  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;  // nullptr for an empty file (mmap refuses length 0)
  size_t size_bytes_ = 0;
};

// Asks the kernel to start reading [p, p + n) of a mapping now (madvise MADV_WILLNEED): one
// large asynchronous read instead of one page fault at a time when the loader's threads copy
// a tensor out. Advice only: failures are ignored.
void advise_will_need(const void* p, size_t n);

}  // namespace bf
