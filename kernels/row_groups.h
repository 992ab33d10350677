// Groups the positions of an index list by row, so that duplicate indices can be summed and each
// unique row updated exactly once (deterministically: positions are visited in ascending order).
// Validation happens here too, before any update is written: every index must be in
// [0, num_rows). No TensorFlow dependency.
#pragma once

#include <cstddef>
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

  int64_t num_unique() const { return num_unique_; }
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

  // Tests: group with the eight-byte slots from `n` indices on, as from 2^32 - 1 otherwise.
  void set_wide_slots_from_for_testing(int64_t n) { wide_slots_from_ = n; }

 private:
  // Buffers kept from a much larger earlier call are given back rather than held forever.
  void ReleaseIfOversized(int64_t n) {
    constexpr size_t kKeepAnyway = size_t{1} << 16;
    if (next_.capacity() > kKeepAnyway && next_.capacity() > 8 * static_cast<size_t>(n)) {
      const int64_t wide_slots_from = wide_slots_from_;
      *this = RowGroups();
      wide_slots_from_ = wide_slots_from;
    }
  }

  // The open-addressing table's insertion of every position, with slots of type Slot: the group
  // whose row hashes there, all ones if empty. Returns the first position whose index is outside
  // [0, num_rows), having stopped there, else -1.
  template <typename Slot, typename Index>
  int64_t GroupPositions(const Index* indices, int64_t n, int64_t num_rows,
                         std::vector<Slot>* table);

  // The first num_unique_ entries of rows_, first_, count_ and last_ are this call's groups; the
  // vectors are kept at least num_positions_ long across calls, so appending a group is a store
  // through a pointer (push_back's size update was a chain through memory at every new row).
  std::vector<int64_t> rows_;
  std::vector<int64_t> first_;
  std::vector<int64_t> count_;
  std::vector<int64_t> last_;  // the highest position of each group (while building)
  std::vector<int64_t> next_;
  std::vector<ChunkStart> chunk_starts_;
  int64_t num_positions_ = 0;
  int64_t num_unique_ = 0;
  // Open-addressing tables: the group whose row hashes to a slot; its row is in rows_. Four
  // bytes a slot where the groups' numbers fit (below 2^32 - 1 indices), eight beyond. The table
  // is cold at every call (an update has streamed the rows through the caches since), and its
  // size is most of the cost: grouping 16,384 ids after a pass over 32 MiB took 0.26 ms with
  // sixteen bytes a slot (the row beside its group), 0.19 ms with eight; four bytes a slot and
  // the stores through pointers, 0.67-0.70x the time of eight and push_back (Zen 5 VM).
  std::vector<uint32_t> slots32_;
  std::vector<uint64_t> slots64_;
  int64_t wide_slots_from_ = int64_t{UINT32_MAX};
};

template <typename Index>
bool RowGroups::Build(const Index* indices, int64_t n, int64_t num_rows, IndexError* error) {
  ReleaseIfOversized(n);
  chunk_starts_.clear();
  // Every position's entry is written when it is appended (-1: the last of its group so far).
  if (static_cast<int64_t>(next_.size()) < n) {
    next_.resize(n);
    rows_.resize(n);
    first_.resize(n);
    count_.resize(n);
    last_.resize(n);
  }
  num_positions_ = n;
  num_unique_ = 0;
  if (n == 0) return true;
  const int64_t bad = n < wide_slots_from_ ? GroupPositions(indices, n, num_rows, &slots32_)
                                           : GroupPositions(indices, n, num_rows, &slots64_);
  if (bad < 0) return true;
  error->position = bad;
  error->value = static_cast<int64_t>(indices[bad]);
  num_positions_ = 0;
  num_unique_ = 0;
  chunk_starts_.clear();
  return false;
}

template <typename Slot, typename Index>
int64_t RowGroups::GroupPositions(const Index* indices, int64_t n, int64_t num_rows,
                                  std::vector<Slot>* table) {
  // At most a quarter of the slots are used (half beyond 2**20 indices, to bound the memory):
  // half full took longer (longer probe runs), and so did leaving the table uncleared between
  // calls with tags that tell one call's slots from the last's (it is cold after an update has
  // streamed the rows through the caches; clearing it sequentially brings it in fastest).
  const int64_t min_slots = n <= (int64_t{1} << 20) ? 4 * n : 2 * n;
  int log2_slots = 1;
  while ((int64_t{1} << log2_slots) < min_slots) ++log2_slots;
  const uint64_t mask = (uint64_t{1} << log2_slots) - 1;
  constexpr Slot kEmpty = ~Slot{0};
  table->assign(mask + 1, kEmpty);

  Slot* const slots = table->data();
  int64_t* const rows = rows_.data();
  int64_t* const first = first_.data();
  int64_t* const count = count_.data();
  int64_t* const last = last_.data();
  int64_t* const next = next_.data();
  int64_t unique = 0;
  // Walk positions from first to last and append each to its group's list, so the lists come
  // out in ascending order of position and a position's place in its list is known when it is
  // appended (groups are numbered in order of first appearance).
  // Each index is checked as it is grouped: a pass of its own over cold indices cost ~10% of
  // the grouping, and an index is out of range in no call that goes on to update.
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = static_cast<int64_t>(indices[i]);
    if (static_cast<uint64_t>(row) >= static_cast<uint64_t>(num_rows)) return i;
    uint64_t slot = (static_cast<uint64_t>(row) * 0x9e3779b97f4a7c15ull) >> (64 - log2_slots);
    Slot group;
    while ((group = slots[slot]) != kEmpty && rows[group] != row) slot = (slot + 1) & mask;
    next[i] = -1;
    if (group == kEmpty) {
      slots[slot] = static_cast<Slot>(unique);
      rows[unique] = row;
      first[unique] = i;
      last[unique] = i;
      count[unique] = 1;
      ++unique;
    } else {
      next[last[group]] = i;
      last[group] = i;
      if (count[group]++ % kDuplicateChunkRows == 0) {
        chunk_starts_.push_back({static_cast<int64_t>(group), i});
      }
    }
  }
  num_unique_ = unique;
  return -1;
}

}  // namespace tf_ftrl
