// Cache-line aligned storage in bytes, for any element type (packed weights, per-thread scratch).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

namespace lrk {

// count * elem_bytes, or std::length_error when the byte size would not fit in a size_t (or in
// the address space: past PTRDIFF_MAX no allocation can succeed, and pointer arithmetic breaks).
inline std::size_t checked_bytes(std::size_t count, std::size_t elem_bytes, const char* what) {
  std::size_t bytes = 0;
  if (__builtin_mul_overflow(count, elem_bytes, &bytes) ||
      bytes > static_cast<std::size_t>(PTRDIFF_MAX) - 64) {
    throw std::length_error(std::string(what) + " too large: " + std::to_string(count) +
                            " elements of " + std::to_string(elem_bytes) + " bytes");
  }
  return bytes;
}

class AlignedBuffer {
 public:
  // 64 bytes covers one AVX-512 vector and every cache line we target.
  static constexpr std::size_t kAlignment = 64;

  AlignedBuffer() = default;
  AlignedBuffer(std::size_t count, std::size_t elem_bytes) { resize(count, elem_bytes); }

  // Discards the contents. Sizes are checked in bytes (see checked_bytes).
  void resize(std::size_t count, std::size_t elem_bytes) {
    resize_bytes(checked_bytes(count, elem_bytes, "buffer"));
  }
  void resize_bytes(std::size_t bytes) {
    if (bytes == 0) {
      data_.reset();
      bytes_ = 0;
      return;
    }
    const std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* p = std::aligned_alloc(kAlignment, rounded);
    if (p == nullptr) throw std::bad_alloc();
    data_.reset(p);
    bytes_ = bytes;
  }

  void* data() { return data_.get(); }
  const void* data() const { return data_.get(); }
  template <class T>
  T* as() {
    return static_cast<T*>(data_.get());
  }
  template <class T>
  const T* as() const {
    return static_cast<const T*>(data_.get());
  }
  std::size_t size_bytes() const { return bytes_; }

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> data_;
  std::size_t bytes_ = 0;
};

}  // namespace lrk
