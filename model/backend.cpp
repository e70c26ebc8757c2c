#include "inflight/backend.hpp"

#include <stdexcept>

namespace inflight {

// A backend that samples on the host (the default) never receives these calls: the executor asks
// samples_on_device() first. Reaching them is a bug in the caller.
void backend::add_sampler(uint64_t, const sampling_params&, std::span<const int32_t>) {
  throw std::logic_error("backend::add_sampler: this backend samples on the host");
}

void backend::remove_sampler(uint64_t) {}

void backend::forward_and_sample(std::span<const sequence_chunk>, std::span<const uint64_t>, std::span<sample_result>) {
  throw std::logic_error("backend::forward_and_sample: this backend samples on the host");
}

}  // namespace inflight
