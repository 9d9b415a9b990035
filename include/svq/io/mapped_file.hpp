// Read-only bytes of a file: memory-mapped (POSIX mmap) or read into memory.
//
// A mapped_file is held by shared_ptr: whatever views its bytes (a loaded
// quantized matrix's words, a tensor span) keeps the mapping alive by holding
// a copy of the pointer. The bytes start 8-byte aligned in both modes (a page
// boundary when mapped, a uint64_t buffer when read), so an 8-byte-aligned
// offset in the file is an aligned address.
#pragma once

#include <svq/error.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace svq {

class mapped_file {
    struct private_tag {};

public:
    // Maps `path` read-only (mmap = true) or reads it into memory. Throws
    // svq::io_error naming the file and the system's reason.
    static std::shared_ptr<const mapped_file> open(const std::filesystem::path& path, bool mmap = true) {
        auto f = std::make_shared<mapped_file>(private_tag{}, path.string());
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw io_error(fmt::format("{}: cannot open: {}", f->name_, std::strerror(errno)));
        struct fd_closer {
            int fd;
            ~fd_closer() { ::close(fd); }
        } closer{fd};
        struct stat st {};
        if (::fstat(fd, &st) != 0) throw io_error(fmt::format("{}: cannot stat: {}", f->name_, std::strerror(errno)));
        if (!S_ISREG(st.st_mode)) throw io_error(fmt::format("{}: not a regular file", f->name_));
        const auto size = static_cast<std::size_t>(st.st_size);
        if (size == 0) return f;
        if (mmap) {
            void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) throw io_error(fmt::format("{}: cannot map {} bytes: {}", f->name_, size, std::strerror(errno)));
            f->map_ = p;
            f->bytes_ = {static_cast<const std::byte*>(p), size};
            return f;
        }
        f->buffer_.resize((size + 7) / 8);
        auto* out = reinterpret_cast<char*>(f->buffer_.data());
        std::size_t done = 0;
        while (done < size) {
            const ::ssize_t n = ::read(fd, out + done, size - done);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0)
                throw io_error(fmt::format("{}: read {} of {} bytes: {}", f->name_, done, size,
                                           n < 0 ? std::strerror(errno) : "file shrank while reading"));
            done += static_cast<std::size_t>(n);
        }
        f->bytes_ = {reinterpret_cast<const std::byte*>(out), size};
        return f;
    }

    // Bytes already in memory (a test's, a fuzzer's), named `name` in errors.
    static std::shared_ptr<const mapped_file> from_bytes(std::span<const std::byte> bytes, std::string name = "<memory>") {
        auto f = std::make_shared<mapped_file>(private_tag{}, std::move(name));
        f->buffer_.resize((bytes.size() + 7) / 8);
        if (!bytes.empty()) std::memcpy(f->buffer_.data(), bytes.data(), bytes.size());
        f->bytes_ = {reinterpret_cast<const std::byte*>(f->buffer_.data()), bytes.size()};
        return f;
    }

    mapped_file(private_tag, std::string name) : name_(std::move(name)) {}
    mapped_file(const mapped_file&) = delete;
    mapped_file& operator=(const mapped_file&) = delete;
    ~mapped_file() {
        if (map_ != nullptr) ::munmap(map_, bytes_.size());
    }

    std::span<const std::byte> bytes() const noexcept { return bytes_; }
    std::size_t size() const noexcept { return bytes_.size(); }
    // The path it was opened from (or the name given to from_bytes).
    const std::string& name() const noexcept { return name_; }
    // True when the bytes are the file's pages (no copy), false when read.
    bool mapped() const noexcept { return map_ != nullptr; }

private:
    std::string name_;
    void* map_ = nullptr;
    std::vector<std::uint64_t> buffer_;  // read or copied bytes, 8-byte aligned
    std::span<const std::byte> bytes_;
};

}  // namespace svq
