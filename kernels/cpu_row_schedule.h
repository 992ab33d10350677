// How the CPU loops of a sparse update share the unique rows out over the thread pool, and the
// one place where duplicate rows are summed (in kDuplicateChunkRows' order, row_groups.h): each
// unique row is updated by one thread, in pieces of about equal work where ids repeat, after the
// pool has summed the later chunks of the hottest rows.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cpu_parallel_for.h"
#include "kernels/numeric.h"
#include "kernels/row_groups.h"

namespace tf_ftrl {
namespace cpu {
namespace internal {

// Sums the gradient rows of the chunk that starts at `position` (kDuplicateChunkRows positions of
// its group, or to the group's end) into `sum` (row_size values of the accumulate type): the
// first row assigned, the others added in order of position. Returns the position after the
// chunk, -1 at the group's end.
template <typename T>
TF_FTRL_INLINE int64_t SumChunk(const RowGroups& groups, const T* grad, int64_t row_size,
                                int64_t position, AccumulateType<T>* sum) {
  const T* row = grad + position * row_size;
  for (int64_t j = 0; j < row_size; ++j) sum[j] = Load(row[j]);
  position = groups.next_position(position);
  for (int64_t count = 1; count < kDuplicateChunkRows && position >= 0;
       ++count, position = groups.next_position(position)) {
    row = grad + position * row_size;
    for (int64_t j = 0; j < row_size; ++j) sum[j] += Load(row[j]);
  }
  return position;
}

// A group whose later chunks were summed ahead of the update, on the pool (SumLaterChunks): its
// chunk sums are rows first_slot, first_slot + 1, ... of the partial sums, in chunk order, one
// per later chunk.
struct SplitGroup {
  int64_t group;
  int64_t first_slot;
};

// The split groups, sorted by group, and the partial sums (row_size values of the accumulate
// type per slot). Empty: no group was split.
template <typename A>
struct SplitSums {
  const SplitGroup* groups = nullptr;
  int64_t num_groups = 0;
  const A* partials = nullptr;
};

// The sum of group u's gradient rows, in the order of kDuplicateChunkRows, into `summed` (2 *
// row_size values: the sum, then the chunk being summed); a split group's (`next_split`, advanced
// past it) later chunks come from split.partials. The group has more than one position.
template <typename T>
TF_FTRL_INLINE void SumGroup(const RowGroups& groups, const T* grad, int64_t row_size, int64_t u,
                             const SplitSums<AccumulateType<T>>& split,
                             const SplitGroup*& next_split, AccumulateType<T>* summed) {
  int64_t position = SumChunk(groups, grad, row_size, groups.first_position(u), summed);
  if (next_split != split.groups + split.num_groups && next_split->group == u) {
    const int64_t num_chunks = (groups.count(u) - 1) / kDuplicateChunkRows;
    for (int64_t c = 0; c < num_chunks; ++c) {
      const AccumulateType<T>* partial = split.partials + (next_split->first_slot + c) * row_size;
      for (int64_t j = 0; j < row_size; ++j) summed[j] += partial[j];
    }
    ++next_split;
    return;
  }
  AccumulateType<T>* const chunk = summed + row_size;
  while (position >= 0) {
    position = SumChunk(groups, grad, row_size, position, chunk);
    for (int64_t j = 0; j < row_size; ++j) summed[j] += chunk[j];
  }
}

// Summing a duplicate row costs about this many times less than updating a row: the update
// reads and writes rows of every table, scattered through memory; the duplicate is one row of
// the gradient, mostly in cache. Chosen by measurement (tools/bench_cpu_kernels.cc, Zipf ids,
// the update cut into 8 parts: the slowest part 1.12-1.14x the mean at 8, 1.20-1.22x at 4,
// 1.48x at 16; 2.2-2.3x with unique rows in equal numbers).
constexpr int64_t kUpdateCostInDuplicates = 8;
// At most this many pieces of equal work for the pool to share out.
constexpr int64_t kMaxWeightedPieces = 256;
// ScheduleUniqueRows shares unique rows out in equal numbers, not weighted, where all the
// duplicates together are at most this share (its inverse) of one thread's work.
constexpr int64_t kFewDuplicatesShare = 32;

// A group has its later chunks (kDuplicateChunkRows) summed ahead of the update by the pool
// (SumLaterChunks) when it has more duplicates than this and its work (GroupWork) is more than
// half of one thread's share of the update: otherwise one thread sums all of a hot id's rows
// (with click-log ids, ~2,000 of 16,384), more than a core's share where there are 64 cores.
// Summing ahead costs a second call of the pool and a pass over the rows that is not overlapped
// with the updates (measured with 2 threads: Zipf ids 15-20% slower had every group over this
// been split), so it is kept for the groups that hold up the update.
constexpr int64_t kSplitAboveDuplicates = 4 * kDuplicateChunkRows;

// The work of group u in units of one duplicate (see kUpdateCostInDuplicates); `split` is the
// next split group at or after u (or the end), advanced past u when it is u.
inline int64_t GroupWork(const RowGroups& groups, int64_t u, const SplitGroup*& split,
                         const SplitGroup* splits_end) {
  const int64_t duplicates = groups.count(u) - 1;
  if (split != splits_end && split->group == u) {
    ++split;
    // The first chunk's rows and one chunk sum per later chunk.
    return kUpdateCostInDuplicates + (kDuplicateChunkRows - 1) +
           duplicates / kDuplicateChunkRows;
  }
  return kUpdateCostInDuplicates + duplicates;
}

// Cuts the unique rows of `groups` into `pieces` ranges of about equal work, counting an update
// as kUpdateCostInDuplicates and each duplicate as 1 (a split group's later chunks as one each:
// they were summed before): bounds[k], bounds[k + 1] delimit piece k (bounds[0] = 0,
// bounds[pieces] = num_unique, non-decreasing). A hot id's duplicates (with click-log ids,
// thousands, and the hot ids all among the first groups) would otherwise pile up in the first
// shard while the other threads wait.
inline std::vector<int64_t> WeightedPieces(const RowGroups& groups, int64_t pieces,
                                           const std::vector<SplitGroup>& split = {}) {
  const int64_t num_unique = groups.num_unique();
  const SplitGroup* const splits_end = split.data() + split.size();
  int64_t total = 0;
  const SplitGroup* next = split.data();
  for (int64_t u = 0; u < num_unique; ++u) total += GroupWork(groups, u, next, splits_end);
  std::vector<int64_t> bounds(pieces + 1, num_unique);
  bounds[0] = 0;
  int64_t piece = 1, done = 0;
  next = split.data();
  for (int64_t u = 0; u < num_unique && piece < pieces; ++u) {
    done += GroupWork(groups, u, next, splits_end);
    // Piece `piece` starts after the row where the work so far reaches its share.
    while (piece < pieces && done * pieces >= total * piece) bounds[piece++] = u + 1;
  }
  return bounds;
}

// The groups to split for `num_threads` threads (kSplitAboveDuplicates), sorted by group, and the
// positions where their later chunks start (slot k's chunk starts at starts[k]; a group's slots
// follow one another in chunk order).
inline void PlanSplit(const RowGroups& groups, int64_t num_threads,
                      std::vector<SplitGroup>* split, std::vector<int64_t>* starts) {
  if (groups.later_chunk_starts().empty()) return;
  const SplitGroup* none = nullptr;
  int64_t total = 0;
  for (int64_t u = 0; u < groups.num_unique(); ++u) total += GroupWork(groups, u, none, none);
  auto worth_splitting = [&](int64_t u) {
    const int64_t duplicates = groups.count(u) - 1;
    return duplicates > kSplitAboveDuplicates &&
           2 * (kUpdateCostInDuplicates + duplicates) * num_threads > total;
  };
  std::vector<ChunkStart> chunks;
  for (const ChunkStart& c : groups.later_chunk_starts()) {
    if (worth_splitting(c.group)) chunks.push_back(c);
  }
  // later_chunk_starts() is in order of position, so each group's chunks stay in chunk order.
  std::stable_sort(chunks.begin(), chunks.end(),
                   [](const ChunkStart& a, const ChunkStart& b) { return a.group < b.group; });
  for (int64_t k = 0; k < static_cast<int64_t>(chunks.size()); ++k) {
    if (k == 0 || chunks[k].group != chunks[k - 1].group) split->push_back({chunks[k].group, k});
    starts->push_back(chunks[k].position);
  }
}

// Sums the chunks that start at starts[begin, end) into rows begin .. end - 1 of `partials`.
template <typename T>
void SumLaterChunks(const RowGroups& groups, const T* grad, int64_t row_size,
                    const int64_t* starts, int64_t begin, int64_t end,
                    AccumulateType<T>* partials) {
  for (int64_t k = begin; k < end; ++k) {
    SumChunk(groups, grad, row_size, starts[k], partials + k * row_size);
  }
}

// Runs shard(begin, end, split) over the unique rows of `groups`, each row in exactly one shard:
// on the calling thread when the update is small; else on the pool, in pieces of equal work
// (WeightedPieces) where indices repeat enough to unbalance rows in equal numbers, after the pool has summed the later chunks of the
// hottest rows (PlanSplit, SumLaterChunks) into the SplitSums the shards are given.
template <typename T, typename Shard>
void ScheduleUniqueRows(const RowGroups& groups, const T* grad, int64_t row_size,
                        int64_t cycles_per_element, const ParallelFor& parallel_for,
                        Shard&& shard) {
  using A = AccumulateType<T>;
  const int64_t num_unique = groups.num_unique();
  const int64_t cost_per_row = std::max<int64_t>(1, row_size * cycles_per_element);
  const SplitSums<A> none;
  if (num_unique * row_size <= kMinElementsToParallelize) {
    if (num_unique > 0) shard(int64_t{0}, num_unique, none);
    return;
  }
  // Unique rows in equal numbers where the duplicates cannot unbalance them: no group has a
  // chunk after its first (kDuplicateChunkRows), and the thread that got every duplicate would
  // do at most 1/kFewDuplicatesShare more than its share of the work. This spares the two passes
  // of WeightedPieces over the groups, which the pool waited for: 1.8% of the samples of
  // row-wise Adagrad's update of 16,384 uniform ids, a few dozen of them repeated, on one
  // thread of two (docs/benchmarks.md).
  const int64_t duplicates = groups.num_positions() - num_unique;
  if (groups.later_chunk_starts().empty() &&
      kFewDuplicatesShare * duplicates * parallel_for.num_threads() <=
          num_unique * kUpdateCostInDuplicates) {
    parallel_for(num_unique, cost_per_row,
                 [&](int64_t begin, int64_t end) { shard(begin, end, none); });
    return;
  }
  std::vector<SplitGroup> split_groups;
  std::vector<int64_t> starts;
  PlanSplit(groups, parallel_for.num_threads(), &split_groups, &starts);
  const int64_t num_slots = static_cast<int64_t>(starts.size());
  std::vector<A> partials(num_slots * row_size);
  SplitSums<A> split;
  if (num_slots > 0) {
    parallel_for(num_slots, std::max<int64_t>(1, kDuplicateChunkRows * row_size),
                 [&](int64_t begin, int64_t end) {
                   SumLaterChunks(groups, grad, row_size, starts.data(), begin, end,
                                  partials.data());
                 });
    split = SplitSums<A>{split_groups.data(), static_cast<int64_t>(split_groups.size()),
                         partials.data()};
  }
  const int64_t pieces = std::min(num_unique, kMaxWeightedPieces);
  const std::vector<int64_t> bounds = WeightedPieces(groups, pieces, split_groups);
  const int64_t cost_per_piece =
      cost_per_row * (num_unique + duplicates / kUpdateCostInDuplicates) / pieces;
  parallel_for(pieces, std::max<int64_t>(1, cost_per_piece), [&](int64_t first, int64_t last) {
    if (bounds[first] < bounds[last]) shard(bounds[first], bounds[last], split);
  });
}

}  // namespace internal
}  // namespace cpu
}  // namespace tf_ftrl
