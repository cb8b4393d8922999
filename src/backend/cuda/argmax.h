// Row-wise argmax on the device (greedy DFlash drafting): ids come back, logits stay.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace bf::cuda {

// out[r] = index of the largest of x[r, 0..n) (lowest index on ties, NaN never chosen, -1 for
// a row without a number). x: rows x n elements of dtype dt (kDtF32 / kDtBF16); out: device.
void launch_argmax_rows(const void* x, int dt, int64_t rows, int64_t n, int32_t* out,
                        cudaStream_t stream);

}  // namespace bf::cuda
