// Backend::sample_rows's reference: the host sampler on a host copy of the rows.
#include "backend/backend.h"

#include "core/error.h"

namespace bf {

SamplingParams sampling_params_of(const RowSampling& row) {
  SamplingParams params;
  params.temperature = row.temperature;
  params.top_k = row.top_k;
  params.top_p = row.top_p;
  params.min_p = row.min_p;
  if (row.num_logprobs > 0) params.logprobs = row.num_logprobs;
  return params;
}

std::vector<SampleResult> Backend::sample_rows(const Tensor& logits,
                                               const std::vector<RowSampling>& rows) {
  BF_CHECK(logits.rank() == 2 && logits.dim(0) == static_cast<int64_t>(rows.size()),
           "sample_rows: logits ", shape_string(logits.shape()), " must be [", rows.size(),
           ", vocab]");
  std::vector<SampleResult> out;
  if (rows.empty()) return out;
  Tensor host = logits.device() == Device::kCPU && logits.dtype() == DType::kF32
                    ? logits
                    : to_host(logits);
  const int64_t vocab = host.dim(1);
  out.reserve(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    std::span<const float> row(host.f32() + static_cast<int64_t>(r) * vocab, vocab);
    out.push_back(
        sample_token(row, sampling_params_of(rows[r]), {}, {}, {}, rows[r].seed, rows[r].position));
  }
  return out;
}

}  // namespace bf
