// take_columns (layers.h): reading the parts of a fused projection's output.
#include <cstdint>

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

}  // namespace bf
