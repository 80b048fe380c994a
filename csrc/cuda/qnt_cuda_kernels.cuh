// The CUDA QNT kernels as CTA programs, written once for the device and for
// the host simulation (csrc/cuda/tests/qnt_cuda_sim.cpp).
//
// A CTA program is a sequence of per-thread phases separated by barriers,
// run through an execution policy `Exec`:
//   ex.block()        the CTA's index in the grid (blockIdx.x)
//   ex.threads(f)     f(t) for thread t of the CTA: on the device the calling
//                     thread; in the simulation every thread of the CTA in turn
//   ex.sync_group()   barrier of the 8 lanes of a thread's group (__syncwarp)
//   ex.sync_cta()     barrier of the whole CTA (__syncthreads)
//   Exec::Local<V>    a per-thread variable, `v[t]`: one V in registers on the
//                     device, one per thread in the simulation
// Barriers are only ever called between `threads` calls, never inside one, so
// every thread executes every barrier (no divergent barriers), and running one
// `threads` call for all threads before the next barrier is a schedule the
// device may also choose; the simulation's memory checker reports every pair
// of accesses that a barrier does not order, whatever the schedule.
// The __global__ kernels in qnt_cuda.cu are one call each of these programs.
#pragma once

#include <cmath>
#include <cstdint>

#include "qnt_block.h"
#include "qnt_cuda_index.cuh"
#include "qnt_cuda_mem.cuh"

namespace gcln_fast {
namespace qnt_cuda {

// ----------------------------------------------------------------------------- launch shapes

// Stage 2 of grad_q: one CTA of 64 x kFinalRows threads per table.
constexpr int kFinalRows = 16;
constexpr int kFinalThreads = 64 * kFinalRows;
// Backward CTAs per SM: 4 x 256 threads keep 16 loads per thread in flight
// (default, not measured) while keeping the partials few enough for stage 2 to
// be a negligible pass.
constexpr int kBackwardCtasPerSm = 4;

// Forward: one CTA per kGroups consecutive blocks of Geom's order, no loop, so
// every thread has its 8 loads in flight at once and the grid covers the tensor.
inline uint32_t forward_grid(const Geom& g) { return (g.total + kGroups - 1) / kGroups; }

// Step tables in global memory (TableMode::kGlobal): one thread per entry.
inline uint32_t step_table_grid(int tables) {
  return static_cast<uint32_t>((static_cast<int64_t>(tables) * 64 + kThreads - 1) / kThreads);
}

// Where the forward kernel finds its step tables.
enum class TableMode : int {
  kAll = 0,     // every table in each CTA's shared memory (at most kMaxSmemTables)
  kRange = 1,   // the consecutive tables of the CTA's blocks, in shared memory
  kGlobal = 2,  // precomputed by step_table_kernel, read through the read-only cache
};

// kRange needs the table index to be non-decreasing along Geom's block order
// (so a CTA's tables are the range from its first block's to its last block's)
// and short ranges: a table is used by a run of `run` consecutive blocks, so
// kGroups consecutive blocks see at most ceil((kGroups - 1) / run) + 1 tables.
inline TableMode forward_table_mode(const Geom& g, const TableMap& m) {
  if (m.count <= kMaxSmemTables) return TableMode::kAll;
  const bool monotone = g.channel_fastest ? m.qsc == 0 : (g.N == 1 || m.qsn >= (g.C - 1) * m.qsc);
  const int64_t run = static_cast<int64_t>(g.Hb) * g.Wb * (m.qsc == 0 ? g.C : 1);
  const int64_t most = (kGroups - 1 + run - 1) / run + 1;
  return monotone && most <= kMaxSmemTables ? TableMode::kRange : TableMode::kGlobal;
}

// Backward: the grid is m.count groups (one per table, so that the CTAs of a
// group write the partial sums of that table only) of this many CTAs each,
// each CTA walking its table's blocks with a grid-stride loop. It depends only
// on the shape and the SM count, so the partial sums and their order are
// reproducible.
inline int64_t backward_ctas_per_table(const TableMap& m, int sm_count) {
  const int64_t useful = (static_cast<int64_t>(m.per_table) + kGroups - 1) / kGroups;
  const int64_t target = static_cast<int64_t>(sm_count) * kBackwardCtasPerSm;
  const int64_t want = (target + m.count - 1) / m.count;
  const int64_t ctas = useful < want ? useful : want;
  return ctas > 1 ? ctas : 1;
}

// ----------------------------------------------------------------------------- kernel arguments

template <typename T>
struct ForwardArgs {
  const T* x;
  Strides sx;
  T* y;
  Strides sy;
  Geom g;
  const float* q;  // (m.count, 64)
  TableMap m;
  TableMode mode;
  const float* tables;  // kGlobal: (m.count, kTableFloats) step tables
  float scale;
};

struct StepTableArgs {
  const float* q;
  int64_t entries;  // tables * 64
  float scale;
  float* tables;
};

template <typename T>
struct BackwardArgs {
  const T* gy;
  Strides sg;
  const T* x;
  Strides sx;
  T* gx;  // nullptr: grad_x not wanted
  Strides sgx;
  Geom g;
  const float* q;
  TableMap m;
  float scale;
  uint32_t ctas;    // CTAs per table
  float* partials;  // (m.count * ctas, 64), or nullptr: grad_q not wanted
};

struct GradQFinalArgs {
  const float* partials;
  uint32_t ctas;
  float scale;
  float* out;  // (tables, 64)
};

// Shared memory of each kernel (a __shared__ variable on the device).
struct ForwardShared {
  alignas(16) float tab[kMaxSmemTables * kTableFloats];
  alignas(16) float buf[kGroups * kFwdGroupPitch];
};

struct BackwardShared {
  alignas(16) float inv[kBlockFloats];
  alignas(16) float buf[kGroups * kGradGroupPitch];  // also the kGroups x 64 reduction buffer
};

struct GradQFinalShared {
  float sum[kFinalRows * 64];
};

// ----------------------------------------------------------------------------- per-thread phases

// A thread's place: group `group` of the CTA owns block `b`, and the thread is
// its column i. Threads of a group past the last block are inactive (they still
// execute every barrier).
struct Lane {
  int group, i;
  bool active;
  BlockPos b;
};

GCLN_HD Lane forward_lane(uint32_t cta, int t, const Geom& g) {
  Lane l;
  l.group = t >> 3;
  l.i = t & 7;
  const uint32_t slot = cta * static_cast<uint32_t>(kGroups) + static_cast<uint32_t>(l.group);
  l.active = slot < g.total;
  l.b = l.active ? slot_position(slot, g) : BlockPos{0, 0, 0, 0};
  return l;
}

// Entry e of the q tables (table e / 64, coefficient e % 64): where it goes in
// the step tables, and its two values, correctly rounded. The inverse step
// carries the 512 of R(u) = rint(rint(512 u) / 512) (block::round_tie_scaled):
// with z a coefficient of x, z * 512 scale / q = 512 Z / q (512 scale is exact).
GCLN_HD int64_t step_table_offset(int64_t e) { return (e >> 6) * kTableFloats + ((e & 63) >> 3) * kRowPitch + (e & 7); }
GCLN_HD float inverse_step(float q, float scale) { return div_rn(scale * block::kTieGrid, q); }
GCLN_HD float step_of(float q, float scale) { return div_rn(q, scale); }

// Rows of x (or of grad_x) past the image's last row (column) are added onto
// it: the adjoint of the replicate padding, for one column (row) v whose
// in-image part ends at index `last` (>= 0). Interior blocks skip it.
GCLN_HD void fold_onto_last(float v[8], int last) {
  if (last >= 7) return;
  float tail = 0.0f;
  GCLN_UNROLL
  for (int k = 1; k < 8; ++k) tail += k > last ? v[k] : 0.0f;
  GCLN_UNROLL
  for (int k = 0; k < 7; ++k) v[k] += k == last ? tail : 0.0f;
}

// Forward, phase 1: column i of the block, column DCT, into the block buffer.
template <typename T>
GCLN_HD void forward_columns(const T* __restrict__ x, const Strides& sx, const Geom& g, const BlockPos& b, int i,
                             float* buf) {
  float v[8];
  load_column_replicate(x, sx, g, b, i, v);
  block::fdct8(v);  // v[k] = (D X)[k][i]
  write_column(buf, i, v);
}

// Forward, phase 2: row i: row DCT (coefficients Z[i][0..7]), quantize with
// the steps of coefficient row i, inverse row DCT, back in place.
template <block::Surrogate S, bool kSoft>
GCLN_HD void forward_rows(float* buf, int i, const float inv[8], const float step[8]) {
  float v[8];
  read_row(buf, i, v);
  block::fdct8(v);  // v[j] = Z[i][j]
  GCLN_UNROLL
  for (int j = 0; j < 8; ++j) v[j] = block::quantize_prescaled<S, kSoft>(v[j], inv[j], step[j]);
  block::idct8(v);  // v[j] = (Zq D)[i][j]
  write_row(buf, i, v);
}

// Forward, phase 3: column i: inverse column DCT and the store.
template <typename T>
GCLN_HD void forward_store(const float* buf, T* __restrict__ y, const Strides& sy, const Geom& g, const BlockPos& b,
                           int i) {
  float v[8];
  read_column(buf, i, v);
  block::idct8(v);  // v[k] = (D^T Zq D)[k][i]
  store_column(y, sy, g, b, i, v);
}

// Backward, phase 1: columns of x (replicate-padded) and of grad_y
// (zero-padded), column DCTs, into the two block buffers.
template <typename T>
GCLN_HD void backward_columns(const T* __restrict__ x, const Strides& sx, const T* __restrict__ gy, const Strides& sg,
                              const Geom& g, const BlockPos& b, int i, float* xbuf, float* gbuf) {
  float z[8], gv[8];
  load_column_replicate(x, sx, g, b, i, z);
  load_column_zero(gy, sg, g, b, i, gv);
  block::fdct8(z);
  block::fdct8(gv);
  write_column(xbuf, i, z);
  write_column(gbuf, i, gv);
}

// Backward, phase 2: row i of both, row DCTs: Z_x[i][j] and G[i][j]; with
// u = Z_x * inv / 512 = Z / q: acc[j] += G (s(u) - u s'(u)) (the caller applies
// 1/scale to the total) and, for grad_x, row i of (s'(u) * G) D, its columns
// past the image folded onto the last, back into the x buffer.
template <block::Surrogate S>
GCLN_HD void backward_rows(float* xbuf, const float* gbuf, int i, const float inv[8], float acc[8], bool need_gx,
                           bool need_gq, int last_col) {
  float z[8], gv[8];
  read_row(xbuf, i, z);
  read_row(gbuf, i, gv);
  block::fdct8(z);   // Z_x[i][j]
  block::fdct8(gv);  // G[i][j]
  GCLN_UNROLL
  for (int j = 0; j < 8; ++j) {
    const float u512 = z[j] * inv[j];
    const float r = block::round_tie_scaled(u512);
    const float u = u512 * block::kInvTieGrid;  // exact
    const float slope = block::surrogate_slope<S>(u, r);
    if (need_gq) acc[j] = ::fmaf(gv[j], block::surrogate_value<S>(u, r) - u * slope, acc[j]);
    gv[j] *= slope;
  }
  if (!need_gx) return;
  block::idct8(gv);  // row i of (s'(u) * G) D
  fold_onto_last(gv, last_col);
  write_row(xbuf, i, gv);  // a lane rewrites only the row it read
}

// Backward, phase 3 (grad_x): column i: inverse column DCT, the rows past the
// image folded onto the last, and the store of the in-image part.
template <typename T>
GCLN_HD void backward_store(const float* xbuf, T* __restrict__ gx, const Strides& sgx, const Geom& g,
                            const BlockPos& b, int i) {
  float v[8];
  read_column(xbuf, i, v);
  block::idct8(v);  // column i of D^T (s'(u) * G) D, columns folded
  fold_onto_last(v, g.H - 1 - b.by * 8);
  store_column(gx, sgx, g, b, i, v);
}

// ----------------------------------------------------------------------------- CTA programs

template <typename Exec>
GCLN_HD void step_table_cta(const Exec& ex, const StepTableArgs& a) {
  ex.threads([&](int t) {
    const int64_t e = static_cast<int64_t>(ex.block()) * kThreads + t;
    if (e >= a.entries) return;
    const float qe = global_load(a.q + e);
    float* entry = a.tables + step_table_offset(e);
    global_store(entry, inverse_step(qe, a.scale));
    global_store(entry + kBlockFloats, step_of(qe, a.scale));
  });
}

// The tables [first, first + count) a forward CTA keeps in shared memory.
struct TableRange {
  int first, count;
};

GCLN_HD TableRange forward_tables(uint32_t cta, const Geom& g, const TableMap& m, TableMode mode) {
  if (mode != TableMode::kRange) return TableRange{0, m.count};
  const uint32_t first = cta * static_cast<uint32_t>(kGroups);
  const uint32_t last = first + kGroups - 1 < g.total ? first + kGroups - 1 : g.total - 1;
  const int lo = table_of(slot_position(first, g), m);
  return TableRange{lo, table_of(slot_position(last, g), m) - lo + 1};
}

// The 8 inverse steps and steps of coefficient row i of table t.
template <typename T>
GCLN_HD void forward_steps(const ForwardArgs<T>& a, const ForwardShared& sh, const TableRange& r, int t, int i,
                           float inv[8], float step[8]) {
  if (a.mode == TableMode::kGlobal) {
    const float* tab = a.tables + static_cast<int64_t>(t) * kTableFloats + i * kRowPitch;
    global_load8_ro(tab, inv);
    global_load8_ro(tab + kBlockFloats, step);
  } else {
    const float* tab = sh.tab + (t - r.first) * kTableFloats + i * kRowPitch;
    shared_load8(tab, inv);
    shared_load8(tab + kBlockFloats, step);
  }
}

template <typename Exec, typename T, block::Surrogate S, bool kSoft>
GCLN_HD void forward_cta(const Exec& ex, const ForwardArgs<T>& a, ForwardShared& sh) {
  const TableRange range = forward_tables(ex.block(), a.g, a.m, a.mode);
  if (a.mode != TableMode::kGlobal) {  // divide once per CTA, in shared memory
    ex.threads([&](int t) {
      for (int e = t; e < range.count * 64; e += kThreads) {
        const float qe = global_load(a.q + static_cast<int64_t>(range.first) * 64 + e);
        float* entry = sh.tab + step_table_offset(e);
        shared_store(entry, inverse_step(qe, a.scale));
        shared_store(entry + kBlockFloats, step_of(qe, a.scale));
      }
    });
    ex.sync_cta();
  }
  typename Exec::template Local<Lane> lane;
  ex.threads([&](int t) {
    lane[t] = forward_lane(ex.block(), t, a.g);
    const Lane& l = lane[t];
    if (l.active) forward_columns(a.x, a.sx, a.g, l.b, l.i, sh.buf + l.group * kFwdGroupPitch);
  });
  ex.sync_group();
  ex.threads([&](int t) {
    const Lane& l = lane[t];
    if (!l.active) return;
    float inv[8], step[8];
    forward_steps(a, sh, range, table_of(l.b, a.m), l.i, inv, step);
    forward_rows<S, kSoft>(sh.buf + l.group * kFwdGroupPitch, l.i, inv, step);
  });
  ex.sync_group();
  ex.threads([&](int t) {
    const Lane& l = lane[t];
    if (l.active) forward_store(sh.buf + l.group * kFwdGroupPitch, a.y, a.sy, a.g, l.b, l.i);
  });
}

// The fused backward, stage 1: CTA `cta` of table `table` walks the blocks
// that use that table with a grid-stride loop; for each, grad_x (when wanted)
// is stored, and each thread accumulates the grad_q terms of its coefficient
// row in registers. Then (when grad_q is wanted) the CTA sums its kGroups
// groups in a fixed order into one 64-float partial row. No atomics: the
// result is bitwise reproducible.
template <typename Exec, typename T, block::Surrogate S>
GCLN_HD void backward_cta(const Exec& ex, const BackwardArgs<T>& a, BackwardShared& sh) {
  struct State {
    Lane l;
    float inv[8], acc[8];
  };
  typename Exec::template Local<State> st;
  const uint32_t table = ex.block() / a.ctas;
  const uint32_t cta = ex.block() - table * a.ctas;
  const bool need_gx = a.gx != nullptr, need_gq = a.partials != nullptr;
  ex.threads([&](int t) {
    const float* qt = a.q + static_cast<int64_t>(table) * 64;
    for (int k = t; k < 64; k += kThreads) {
      shared_store(sh.inv + step_table_offset(k), inverse_step(global_load(qt + k), a.scale));
    }
  });
  ex.sync_cta();
  ex.threads([&](int t) {
    State& s = st[t];
    s.l.group = t >> 3;
    s.l.i = t & 7;
    shared_load8(sh.inv + s.l.i * kRowPitch, s.inv);
    GCLN_UNROLL
    for (int j = 0; j < 8; ++j) s.acc[j] = 0.0f;
  });
  const uint32_t stride = a.ctas * static_cast<uint32_t>(kGroups);
  for (uint32_t base = cta * static_cast<uint32_t>(kGroups); base < a.m.per_table; base += stride) {
    ex.threads([&](int t) {
      State& s = st[t];
      const uint32_t slot = base + static_cast<uint32_t>(s.l.group);
      s.l.active = slot < a.m.per_table;
      if (!s.l.active) return;
      s.l.b = table_slot_position(slot, static_cast<int>(table), a.g, a.m);
      float* xbuf = sh.buf + s.l.group * kGradGroupPitch;
      backward_columns(a.x, a.sx, a.gy, a.sg, a.g, s.l.b, s.l.i, xbuf, xbuf + kBlockFloats);
    });
    ex.sync_group();
    ex.threads([&](int t) {
      State& s = st[t];
      float* xbuf = sh.buf + s.l.group * kGradGroupPitch;
      if (s.l.active) {
        backward_rows<S>(xbuf, xbuf + kBlockFloats, s.l.i, s.inv, s.acc, need_gx, need_gq,
                         a.g.W - 1 - s.l.b.bx * 8);
      }
    });
    ex.sync_group();
    // (No barrier after this phase: a lane reads back only its own column i,
    // which the next block's phase 1 overwrites in that same lane.)
    if (need_gx) {
      ex.threads([&](int t) {
        const State& s = st[t];
        if (s.l.active) backward_store(sh.buf + s.l.group * kGradGroupPitch, a.gx, a.sgx, a.g, s.l.b, s.l.i);
      });
    }
  }
  if (!need_gq) return;
  ex.sync_cta();
  float* red = sh.buf;  // kGroups x 64, reusing the transpose buffers
  ex.threads([&](int t) { shared_store8(red + t * 8, st[t].acc); });
  ex.sync_cta();
  ex.threads([&](int t) {
    if (t >= 64) return;
    float sum = 0.0f;
    GCLN_PRAGMA(unroll 8)
    for (int r = 0; r < kGroups; ++r) sum += shared_load(red + r * 64 + t);
    global_store(a.partials + static_cast<int64_t>(ex.block()) * 64 + t, sum);
  });
}

// grad_q, stage 2: CTA `table` sums that table's `ctas` partial rows in a
// fixed order (kFinalRows interleaved running sums, then those in order; the
// running sums keep enough loads in flight that this pass is not latency
// bound) and applies the contract's 1/scale: G is the transform of grad_y
// itself and u = Z_x * scale / q = Z / q, so nothing else carries a scale.
template <typename Exec>
GCLN_HD void grad_q_final_cta(const Exec& ex, const GradQFinalArgs& a, GradQFinalShared& sh) {
  const uint32_t table = ex.block();
  ex.threads([&](int t) {
    const int k = t & 63, r = t >> 6;
    const float* p = a.partials + static_cast<int64_t>(table) * a.ctas * 64 + k;
    float sum = 0.0f;
    GCLN_PRAGMA(unroll 4)
    for (uint32_t row = static_cast<uint32_t>(r); row < a.ctas; row += kFinalRows) {
      sum += global_load(p + static_cast<int64_t>(row) * 64);
    }
    shared_store(sh.sum + r * 64 + k, sum);
  });
  ex.sync_cta();
  ex.threads([&](int t) {
    if (t >= 64) return;
    float total = 0.0f;
    GCLN_UNROLL
    for (int j = 0; j < kFinalRows; ++j) total += shared_load(sh.sum + j * 64 + t);
    global_store(a.out + static_cast<int64_t>(table) * 64 + t, div_rn(total, a.scale));
  });
}

}  // namespace qnt_cuda
}  // namespace gcln_fast
