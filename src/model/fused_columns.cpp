// Helpers the mixers share (layers.h): reading the parts of a fused projection's output, and
// the weight hint issued once it is launched.
#include <cstdint>
#include <vector>

#include "model/layers.h"

namespace bf {

Tensor take_columns(Backend& be, const Tensor& x, int64_t begin, int64_t width) {
  BF_CHECK(x.rank() == 2 && begin >= 0 && width >= 0 && begin + width <= x.dim(1),
           "take_columns: cannot take ", width, " columns at ", begin, " of ",
           shape_string(x.shape()));
  if (x.dim(0) == 1) {
    Tensor view = x.reshape({x.dim(1)}).rows(begin, width);
    if (reinterpret_cast<uintptr_t>(view.raw()) % 16 == 0) return view.reshape({1, width});
  }
  Tensor out = be.empty({x.dim(0), width}, x.dtype());
  be.slice_columns(x, begin, out);
  return out;
}

std::vector<Tensor> split_columns(Backend& be, const Tensor& x,
                                  const std::vector<int64_t>& widths) {
  std::vector<Tensor> parts;
  int64_t total = 0;
  for (int64_t w : widths) total += w;
  BF_CHECK(x.rank() == 2 && total <= x.dim(1), "split_columns: cannot take ", total,
           " columns of ", shape_string(x.shape()));
  if (x.dim(0) == 1) {
    int64_t begin = 0;
    for (int64_t w : widths) {
      parts.push_back(take_columns(be, x, begin, w));
      begin += w;
    }
    return parts;
  }
  for (int64_t w : widths) parts.push_back(be.empty({x.dim(0), w}, x.dtype()));
  be.split_columns(x, parts);
  return parts;
}

void hint_weights_after_projection(Backend& be, const Tensor& out_proj,
                                   const std::vector<Tensor>& next, int64_t tokens) {
  std::vector<Tensor> ahead{out_proj};
  ahead.insert(ahead.end(), next.begin(), next.end());
  be.prefetch_weights(ahead, tokens);
}

}  // namespace bf
