#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace bf {

namespace {

// Closes the descriptor on every path out of open(); the mapping outlives it.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::filesystem::path& path) {
  FdGuard guard{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  BF_CHECK(guard.fd >= 0, "cannot open ", path.string(), ": ", std::strerror(errno));
  struct stat info {};
  BF_CHECK(::fstat(guard.fd, &info) == 0, "cannot stat ", path.string(), ": ", std::strerror(errno));
  BF_CHECK(S_ISREG(info.st_mode), path.string(), " is not a regular file");

  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_bytes_ = static_cast<size_t>(info.st_size);
  if (file->size_bytes_ == 0) return file;
  void* data = ::mmap(nullptr, file->size_bytes_, PROT_READ, MAP_PRIVATE, guard.fd, 0);
  BF_CHECK(data != MAP_FAILED, "cannot mmap ", path.string(), " (", file->size_bytes_,
           " bytes): ", std::strerror(errno));
  file->data_ = static_cast<const uint8_t*>(data);
  return file;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_bytes_);
}

void advise_will_need(const void* p, size_t n) {
  if (p == nullptr || n == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + n;
  (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_WILLNEED);
}

}  // namespace bf
