// Groups the positions of an index list by row, so that duplicate indices can be summed and each
// unique row updated exactly once (deterministically: positions are visited in ascending order).
// Validation happens here too, before any update is written: every index must be in
// [0, num_rows). No TensorFlow dependency.
#pragma once

#include <cstdint>
#include <vector>

namespace tf_ftrl {

// The order in which every kernel (CPU and GPU) sums the gradient rows of one index, so that
// their results agree bit for bit: the index's positions, ascending, cut into chunks of
// kDuplicateChunkRows; each chunk is summed in order starting from its first row, and the row's
// gradient is chunk 0's sum plus chunk 1's, plus chunk 2's, ..., in order. Up to
// kDuplicateChunkRows duplicates this is the plain sum in order of position. The chunks let the
// GPU sum a hot id's rows (thousands in click logs) in parallel, one group of threads per chunk,
// and a sum of chunk sums also rounds less than one long running sum.
constexpr int64_t kDuplicateChunkRows = 32;

// Where a later chunk of the summing order begins: the position of row kDuplicateChunkRows * c
// (c >= 1) of group `group`'s positions in ascending order.
struct ChunkStart {
  int64_t group;
  int64_t position;
};

// The first index outside [0, num_rows), by position.
struct IndexError {
  int64_t position = -1;
  int64_t value = 0;
};

// Reusing one RowGroups across calls (e.g. one per thread) keeps its buffers: allocating and
// page-faulting them anew costs about as much as grouping 16k indices.
class RowGroups {
 public:
  // Groups indices[0, n). Returns false, filling *error, if any index is outside [0, num_rows);
  // then nothing else is meaningful.
  template <typename Index>
  bool Build(const Index* indices, int64_t n, int64_t num_rows, IndexError* error);

  int64_t num_unique() const { return static_cast<int64_t>(rows_.size()); }
  // How many indices were grouped.
  int64_t num_positions() const { return num_positions_; }
  // The row of unique group u.
  int64_t row(int64_t u) const { return rows_[u]; }
  // The lowest position of group u; next_position() walks the others in ascending order, ending
  // with -1.
  int64_t first_position(int64_t u) const { return first_[u]; }
  // How many positions group u has.
  int64_t count(int64_t u) const { return count_[u]; }
  int64_t next_position(int64_t position) const { return next_[position]; }
  // The start of every chunk after the first of every group (kDuplicateChunkRows), in ascending
  // order of position, so a group's chunk starts come in its chunks' order. Empty when no index
  // repeats more than kDuplicateChunkRows times.
  const std::vector<ChunkStart>& later_chunk_starts() const { return chunk_starts_; }

 private:
  // Buffers kept from a much larger earlier call are given back rather than held forever.
  void ReleaseIfOversized(int64_t n) {
    constexpr size_t kKeepAnyway = size_t{1} << 16;
    if (next_.capacity() > kKeepAnyway && next_.capacity() > 8 * static_cast<size_t>(n)) {
      *this = RowGroups();
    }
  }

  std::vector<int64_t> rows_;
  std::vector<int64_t> first_;
  std::vector<int64_t> count_;
  std::vector<int64_t> last_;  // the highest position of each group (while building)
  std::vector<int64_t> next_;
  std::vector<ChunkStart> chunk_starts_;
  int64_t num_positions_ = 0;
  // Open-addressing table: the group whose row hashes to a slot (-1 if empty); its row is in
  // rows_. Eight bytes a slot, not sixteen with the row beside it: the table is cold at every
  // call, and grouping 16,384 ids so after a pass over 32 MiB took 0.19 ms instead of 0.26.
  std::vector<int64_t> slots_;
};

template <typename Index>
bool RowGroups::Build(const Index* indices, int64_t n, int64_t num_rows, IndexError* error) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t index = static_cast<int64_t>(indices[i]);
    if (index < 0 || index >= num_rows) {
      error->position = i;
      error->value = index;
      return false;
    }
  }
  ReleaseIfOversized(n);
  rows_.clear();
  first_.clear();
  count_.clear();
  last_.clear();
  chunk_starts_.clear();
  // Every position's entry is written when it is appended (-1: the last of its group so far).
  if (static_cast<int64_t>(next_.size()) < n) next_.resize(n);
  num_positions_ = n;
  if (n == 0) return true;

  // At most a quarter of the slots are used (half beyond 2**20 indices, to bound the memory):
  // half full took longer (longer probe runs), and so did leaving the table uncleared between
  // calls with tags that tell one call's slots from the last's (it is cold after an update has
  // streamed the rows through the caches; clearing it sequentially brings it in fastest).
  const int64_t min_slots = n <= (int64_t{1} << 20) ? 4 * n : 2 * n;
  int log2_slots = 1;
  while ((int64_t{1} << log2_slots) < min_slots) ++log2_slots;
  const uint64_t mask = (uint64_t{1} << log2_slots) - 1;
  slots_.assign(mask + 1, -1);
  rows_.reserve(n);
  first_.reserve(n);
  count_.reserve(n);
  last_.reserve(n);

  int64_t* const slots = slots_.data();
  const int64_t* const rows = rows_.data();  // reserved: appending does not move it
  int64_t* const next = next_.data();
  // Walk positions from first to last and append each to its group's list, so the lists come
  // out in ascending order of position and a position's place in its list is known when it is
  // appended (groups are numbered in order of first appearance).
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = static_cast<int64_t>(indices[i]);
    uint64_t slot = (static_cast<uint64_t>(row) * 0x9e3779b97f4a7c15ull) >> (64 - log2_slots);
    while (slots[slot] != -1 && rows[slots[slot]] != row) slot = (slot + 1) & mask;
    next[i] = -1;
    if (slots[slot] == -1) {
      slots[slot] = static_cast<int64_t>(rows_.size());
      rows_.push_back(row);
      first_.push_back(i);
      last_.push_back(i);
      count_.push_back(1);
    } else {
      const int64_t group = slots[slot];
      next[last_[group]] = i;
      last_[group] = i;
      if (count_[group]++ % kDuplicateChunkRows == 0) chunk_starts_.push_back({group, i});
    }
  }
  return true;
}

}  // namespace tf_ftrl
