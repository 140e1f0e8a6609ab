// Index math of dilated attention, written once for the host reference, the CPU tests and the kernels.
// Compiled by both the host C++ compiler and NVRTC, so it uses no headers and no standard library.
// All row arithmetic is 64-bit: sequences reach billions of tokens.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define DILATRON_HD __host__ __device__ __forceinline__
#else
#define DILATRON_HD inline
#endif

namespace dilatron::index {

typedef long long i64;

DILATRON_HD constexpr i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / b; }
DILATRON_HD constexpr i64 min64(i64 a, i64 b) { return a < b ? a : b; }

// Segment s of length w covers [s*w, min((s+1)*w, n)); the last one may be partial.
DILATRON_HD constexpr i64 num_segments(i64 n, i64 w) { return ceil_div(n, w); }
DILATRON_HD constexpr i64 segment_begin(i64 s, i64 w) { return s * w; }
DILATRON_HD constexpr i64 segment_end(i64 s, i64 w, i64 n) { return min64((s + 1) * w, n); }

// Rows selected in a segment of `length` rows by offset o and dilation r: local rows o, o+r, o+2r, ...
DILATRON_HD constexpr i64 selected_count(i64 length, i64 o, i64 r) {
  return o < length ? ceil_div(length - o, r) : 0;
}
DILATRON_HD constexpr i64 selected_row(i64 s, i64 w, i64 o, i64 r, i64 j) { return s * w + o + j * r; }
// Inverse of selected_row: whether `row` is selected (the caller guarantees row < n).
DILATRON_HD constexpr bool is_selected(i64 row, i64 w, i64 o, i64 r) {
  const i64 local = row % w;
  return local >= o && (local - o) % r == 0;
}

// Selected rows in [0, x) of a sequence cut into segments of w: full segments, then the partial one.
DILATRON_HD constexpr i64 selected_before(i64 x, i64 w, i64 o, i64 r) {
  return (x / w) * selected_count(w, o, r) + selected_count(x % w, o, r);
}
// The global row of the j-th selected row (counting from row 0); needs selected_count(w, o, r) > 0.
DILATRON_HD constexpr i64 nth_selected(i64 j, i64 w, i64 o, i64 r) {
  const i64 per_segment = selected_count(w, o, r);
  return (j / per_segment) * w + o + (j % per_segment) * r;
}

// Grouped-query attention: query head h reads kv head h / (H / Hkv).
DILATRON_HD constexpr i64 kv_head(i64 h, i64 heads, i64 kv_heads) { return h / (heads / kv_heads); }

// longnet mode: head h's offset in a branch of dilation r; heads form r contiguous blocks of
// ceil(H / r) heads, block b reading offset b. Always < r.
DILATRON_HD constexpr i64 longnet_offset(i64 h, i64 heads, i64 r) { return h / ceil_div(heads, r); }

// head_groups mode: H heads in G contiguous groups of H/G, the first H%G groups one head larger.
DILATRON_HD constexpr i64 head_group_begin(i64 g, i64 heads, i64 groups) {
  return g * (heads / groups) + min64(g, heads % groups);
}
DILATRON_HD constexpr i64 head_group_of(i64 h, i64 heads, i64 groups) {
  const i64 small = heads / groups, large_heads = (heads % groups) * (small + 1);
  return h < large_heads ? h / (small + 1) : heads % groups + (h - large_heads) / small;
}
// head_groups mode: group g runs branch g with this offset.
DILATRON_HD constexpr i64 head_groups_offset(i64 g, i64 r) { return g % r; }

// How branches combine (docs/SEMANTICS.md); the numeric values are template arguments of kernels.
enum CombineMode { kLongnet = 0, kHeadGroups = 1 };

// Head h's offset in branch `branch` (of `branches`, dilation r), or -1 when h does not take part in it.
DILATRON_HD constexpr i64 branch_offset(int mode, i64 h, i64 heads, i64 branch, i64 branches, i64 r) {
  if (mode == kLongnet) return longnet_offset(h, heads, r);
  return head_group_of(h, heads, branches) == branch ? head_groups_offset(branch, r) : -1;
}

// Attention tiling of one branch. CTAs walk (segment, query tile) segment-major; a query tile is
// BLOCK_M consecutive selected rows of one segment, for one head (offset).
DILATRON_HD constexpr i64 query_tiles_per_segment(i64 w, i64 r, i64 block_m) { return ceil_div(ceil_div(w, r), block_m); }

// A view of n rows may start inside the sequence, at row `origin` (a ring rank's shard): its segments
// are the sequence's, cut to the view, and their selected rows count from the segment's start. Segment
// index 0 of the view is the one holding row `origin`.

// Grid size over a view of n rows: full segments get query_tiles_per_segment, the last (maybe partial)
// segment only the tiles its rows can need.
DILATRON_HD constexpr i64 query_tile_count(i64 n, i64 w, i64 r, i64 block_m, i64 origin = 0) {
  const i64 last = (origin + n - 1) / w - origin / w, last_begin = ((origin + n - 1) / w) * w;
  return last * query_tiles_per_segment(w, r, block_m) + ceil_div(ceil_div(origin + n - last_begin, r), block_m);
}

struct QueryTile {
  bool active;      // false: this CTA has no rows (its head's offset selects fewer rows here)
  i64 first_row;    // the view's row of selected index 0 in this segment (seg_begin + offset in a whole sequence)
  i64 count;        // selected rows of this segment in the view
  i64 q_first;      // first selected index of this tile
};

// The work of CTA `x` for a head with `offset` (>= 0), over a view of n rows starting at row `origin`.
DILATRON_HD constexpr QueryTile query_tile(i64 x, i64 n, i64 w, i64 r, i64 offset, i64 block_m, i64 origin = 0) {
  const i64 per_segment = query_tiles_per_segment(w, r, block_m);
  const i64 segment = origin / w + x / per_segment, q_first = (x % per_segment) * block_m;
  const i64 begin = segment_begin(segment, w);
  const i64 from = begin > origin ? begin : origin, to = min64(begin + w, origin + n);  // the segment in the view
  const i64 skipped = from < to ? selected_count(from - begin, offset, r) : 0;
  const i64 count = from < to ? selected_count(to - begin, offset, r) - skipped : 0;
  return {q_first < count, begin + offset + skipped * r - origin, count, q_first};
}

// A packed batch (docs/SEMANTICS.md, "Packed sequences"): with cu_seqlens, grid z walks the sequences,
// sequence z being rows [cu_seqlens[z], cu_seqlens[z + 1]) of batch element 0, attended as a sequence of
// its own (its view's row 0 is `begin`). Without, grid z walks the batch and each element is one whole
// sequence. The host never reads device offsets (that would synchronize), so the kernels guard them:
// offsets out of order or past the rows make the sequence empty, and nothing is read or written for it.
struct SequenceRows {
  i64 batch, begin, length;
};
DILATRON_HD SequenceRows sequence_rows(const int* cu_seqlens, i64 z, i64 seq_len) {
  if (cu_seqlens == nullptr) return {z, 0, seq_len};
  const i64 begin = cu_seqlens[z], end = cu_seqlens[z + 1];
  return 0 <= begin && begin <= end && end <= seq_len ? SequenceRows{0, begin, end - begin} : SequenceRows{0, 0, 0};
}

// Keys a query tile needs, as selected indices [0, key_end): all of the segment's, or with causal only
// those up to the tile's last query (selected rows ascend, so key index <= query index is key row <=
// query row).
DILATRON_HD constexpr i64 key_end(i64 count, i64 q_first, i64 block_m, bool causal) {
  return causal ? min64(count, q_first + block_m) : count;
}
DILATRON_HD constexpr bool key_visible(i64 key, i64 query, i64 count, bool causal) {
  return key < count && (!causal || key <= query);
}
// Whether every key of [k_first, k_first + block_n) is visible to every query of the tile at q_first,
// so the tile needs no masking (causal masks only tiles that cross the diagonal or the end).
DILATRON_HD constexpr bool key_tile_unmasked(i64 k_first, i64 block_n, i64 q_first, i64 count, bool causal) {
  return k_first + block_n <= count && (!causal || k_first + block_n - 1 <= q_first);
}

// How many key tiles, from the first, need no mask (key_tile_unmasked holds exactly for them): the
// kernel runs those in a loop without mask arithmetic and the rest (at most the edge tiles) masked.
DILATRON_HD constexpr i64 unmasked_key_tiles(i64 count, i64 q_first, i64 block_n, bool causal) {
  return causal ? min64(count / block_n, (q_first + 1) / block_n) : count / block_n;
}

// The ring. Selected rows of [begin, end) (segments of w, offset o, dilation r): the first and how many
// (none when begin >= end). Inside one segment they are first, first + r, ...
struct RowRun {
  i64 first, count;
};
DILATRON_HD constexpr RowRun selected_in(i64 begin, i64 end, i64 w, i64 o, i64 r) {
  const i64 before = selected_before(begin, w, o, r), count = selected_before(end, w, o, r) - before;
  return count > 0 ? RowRun{nth_selected(before, w, o, r), count} : RowRun{0, 0};
}
// The keys a selected query row reads from rows [begin, end) it shares with them: those of its own
// segment, same selection.
DILATRON_HD constexpr RowRun segment_keys(i64 row, i64 w, i64 o, i64 r, i64 begin, i64 end) {
  const i64 s = row / w;
  return selected_in(begin > s * w ? begin : s * w, min64(end, (s + 1) * w), w, o, r);
}
// How many of the keys first, first + r, ... (count of them) a query at `row` sees.
DILATRON_HD constexpr i64 visible_keys(i64 row, i64 first, i64 count, i64 r, bool causal) {
  if (!causal) return count;
  return row < first ? 0 : min64(count, (row - first) / r + 1);
}

}  // namespace dilatron::index
