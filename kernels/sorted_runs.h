// Runs of equal values in sorted indices, for the CUDA sparse kernels (host and device code, so
// the CPU tests check it too).
#pragma once

#include <cstdint>

#include "kernels/numeric.h"

namespace tf_ftrl {

// The end of the run of `value` that starts at `begin` in sorted[0, n) (the first position past
// it; sorted[begin] == value, and positions holding value are contiguous): gallop, then bisect,
// so a hot id's run of thousands costs some twenty dependent loads rather than one per duplicate.
template <typename Index>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE int64_t RunEnd(const Index* sorted, int64_t n,
                                                  int64_t begin, Index value) {
  int64_t low = begin;  // in the run
  int64_t step = 1;
  while (low + step < n && sorted[low + step] == value) {
    low += step;
    step *= 2;
  }
  int64_t high = low + step < n ? low + step : n;  // past the run
  while (high - low > 1) {
    const int64_t middle = low + (high - low) / 2;
    if (sorted[middle] == value) {
      low = middle;
    } else {
      high = middle;
    }
  }
  return high;
}

// The start of the run of `value` that holds `position` in sorted (sorted[position] == value):
// RunEnd's search, backwards.
template <typename Index>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE int64_t RunBegin(const Index* sorted, int64_t position,
                                                    Index value) {
  int64_t high = position;  // in the run
  int64_t step = 1;
  while (high - step >= 0 && sorted[high - step] == value) {
    high -= step;
    step *= 2;
  }
  int64_t low = high - step >= 0 ? high - step : -1;  // before the run
  while (high - low > 1) {
    const int64_t middle = low + (high - low) / 2;
    if (sorted[middle] == value) {
      high = middle;
    } else {
      low = middle;
    }
  }
  return high;
}

}  // namespace tf_ftrl
