// Must not compile: a base codebook without decode(code, out) is not a
// Codebook, so codebook_base rejects it, naming the concept. With
// SVQ_COMPILE_FAIL_CONTROL defined the type has decode and this compiles.
#include <svq/crvq/crvq.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

namespace {

struct missing_decode {
    std::size_t dim() const noexcept { return 2; }
    std::size_t entries() const noexcept { return 4; }
    unsigned code_bits() const noexcept { return 2; }
    std::size_t stored_bits() const noexcept { return 0; }
    std::uint32_t encode(std::span<const float>) const { return 0; }
    void encode(const svq::vector_block&, const svq::vector_block&, std::span<std::uint32_t>) const {}
    static missing_decode fit(const svq::vector_block&, const svq::vector_block&, unsigned, const svq::kmeans_options&,
                              const missing_decode*) {
        return {};
    }
#ifdef SVQ_COMPILE_FAIL_CONTROL
    void decode(std::uint32_t, std::span<float>) const {}
#endif
};

}  // namespace

int main() {
    svq::crvq_config<svq::codebook_base<missing_decode>> config;
    config.base.dim = 2;
    config.base.bits = 2;
    return static_cast<int>(config.base.dim) - 2;
}
