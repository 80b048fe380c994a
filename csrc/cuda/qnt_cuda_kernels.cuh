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
// Stage 1 CTAs per SM: 4 x 256 threads keep 16 loads per thread in flight
// (default, not measured) while keeping the partials few enough for stage 2 to
// be a negligible pass.
constexpr int kGradCtasPerSm = 4;

// Forward: one CTA per kGroups consecutive blocks of Geom's order, no loop, so
// every thread has its 8 loads in flight at once and the grid covers the tensor.
inline uint32_t forward_grid(const Geom& g) { return (g.total + kGroups - 1) / kGroups; }

// Step tables in global memory for cq > kMaxSmemTables: one thread per entry.
inline uint32_t step_table_grid(int cq) {
  return static_cast<uint32_t>((static_cast<int64_t>(cq) * 64 + kThreads - 1) / kThreads);
}

// grad_q stage 1: CTAs per q table. The grid is cq groups of that many CTAs;
// it depends only on the shape and the SM count, so the partial sums and
// their order are reproducible.
inline int64_t grad_q_ctas_per_table(const Geom& g, int cq, int sm_count) {
  const int64_t count = cq == 1 ? g.total : g.per_channel;  // blocks per table
  const int64_t useful = (count + kGroups - 1) / kGroups;
  const int64_t target = static_cast<int64_t>(sm_count) * kGradCtasPerSm;
  const int64_t want = (target + cq - 1) / cq;
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
  const float* q;       // (cq, 8, 8)
  int cq;
  const float* tables;  // (cq, kTableFloats) step tables, or nullptr: built in shared memory
  float scale;
};

struct StepTableArgs {
  const float* q;
  int64_t entries;  // cq * 64
  float scale;
  float* tables;
};

template <typename T>
struct GradQArgs {
  const T* gy;
  Strides sg;
  const T* x;
  Strides sx;
  Geom g;
  const float* q;
  int cq;
  float scale;
  uint32_t ctas;    // CTAs per table
  float* partials;  // (cq * ctas, 64)
};

struct GradQFinalArgs {
  const float* partials;
  uint32_t ctas;
  float scale;
  float* out;  // (cq, 64)
};

// Shared memory of each kernel (a __shared__ variable on the device).
struct ForwardShared {
  alignas(16) float tab[kMaxSmemTables * kTableFloats];
  alignas(16) float buf[kGroups * kFwdGroupPitch];
};

struct GradQShared {
  alignas(16) float inv[kBlockFloats];
  alignas(16) float buf[kGroups * kGradGroupPitch];  // also the kGroups x 64 reduction buffer
};

struct GradQFinalShared {
  float sum[kFinalRows * 64];
};

// ----------------------------------------------------------------------------- per-thread phases

// A thread's place: group `group` of the CTA owns block `slot`, and the thread
// is its column i. Threads of a group past the last block are inactive (they
// still execute every barrier).
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
// the step tables, and its two values, correctly rounded.
GCLN_HD int64_t step_table_offset(int64_t e) {
  return (e >> 6) * kTableFloats + ((e & 63) >> 3) * kRowPitch + (e & 7);
}
GCLN_HD float inverse_step(float q, float scale) { return div_rn(scale, q); }
GCLN_HD float step_of(float q, float scale) { return div_rn(q, scale); }

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
GCLN_HD void forward_rows(float* buf, int i, const float inv[8], const float step[8]) {
  float v[8];
  read_row(buf, i, v);
  block::fdct8(v);  // v[j] = Z[i][j]
  GCLN_UNROLL
  for (int j = 0; j < 8; ++j) v[j] = block::quantize(v[j], inv[j], step[j]);
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

// grad_q, phase 1: columns of x (replicate-padded) and of grad_y
// (zero-padded), column DCTs, into the two block buffers.
template <typename T>
GCLN_HD void grad_columns(const T* __restrict__ x, const Strides& sx, const T* __restrict__ gy, const Strides& sg,
                          const Geom& g, const BlockPos& b, int i, float* xbuf, float* gbuf) {
  float z[8], gv[8];
  load_column_replicate(x, sx, g, b, i, z);
  load_column_zero(gy, sg, g, b, i, gv);
  block::fdct8(z);
  block::fdct8(gv);
  write_column(xbuf, i, z);
  write_column(gbuf, i, gv);
}

// grad_q, phase 2: row i of both, row DCTs, acc[j] += G[i][j] * (round(t) - t)
// with t = Z_x[i][j] * inv[j]. (The caller applies 1/scale to the total.)
GCLN_HD void grad_rows(const float* xbuf, const float* gbuf, int i, const float inv[8], float acc[8]) {
  float z[8], gv[8];
  read_row(xbuf, i, z);
  read_row(gbuf, i, gv);
  block::fdct8(z);   // Z_x[i][j]
  block::fdct8(gv);  // G[i][j]
  GCLN_UNROLL
  for (int j = 0; j < 8; ++j) acc[j] = ::fmaf(gv[j], block::lsq_residual(z[j], inv[j]), acc[j]);
}

// ----------------------------------------------------------------------------- CTA programs

// Step tables (cq, kTableFloats) in global memory, for cq > kMaxSmemTables
// tables, which the forward kernel then reads through the read-only cache
// (dividing in every CTA would cost two IEEE divisions per pixel).
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

template <typename Exec, typename T>
GCLN_HD void forward_cta(const Exec& ex, const ForwardArgs<T>& a, ForwardShared& sh) {
  if (a.tables == nullptr) {  // 1..kMaxSmemTables tables: divide once per CTA, in shared memory
    ex.threads([&](int t) {
      for (int e = t; e < a.cq * 64; e += kThreads) {
        const float qe = global_load(a.q + e);
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
    const int64_t tab = static_cast<int64_t>(a.cq == 1 ? 0 : l.b.c) * kTableFloats + l.i * kRowPitch;
    float inv[8], step[8];
    if (a.tables == nullptr) {
      shared_load8(sh.tab + tab, inv);
      shared_load8(sh.tab + tab + kBlockFloats, step);
    } else {
      global_load8_ro(a.tables + tab, inv);
      global_load8_ro(a.tables + tab + kBlockFloats, step);
    }
    forward_rows(sh.buf + l.group * kFwdGroupPitch, l.i, inv, step);  // a lane rewrites only the row it read
  });
  ex.sync_group();
  ex.threads([&](int t) {
    const Lane& l = lane[t];
    if (l.active) forward_store(sh.buf + l.group * kFwdGroupPitch, a.y, a.sy, a.g, l.b, l.i);
  });
}

// grad_q, stage 1. CTA `cta` of table `table` covers the blocks whose
// coefficients feed grad_q[table] (channel `table`, or every block when q is
// shared) with a grid-stride loop, each thread accumulating the 8
// coefficients of its row i in registers; then the CTA sums its kGroups
// groups in a fixed order into one 64-float partial row. No atomics: the
// result is bitwise reproducible.
template <typename Exec, typename T>
GCLN_HD void grad_q_partial_cta(const Exec& ex, const GradQArgs<T>& a, GradQShared& sh) {
  struct State {
    Lane l;
    float inv[8], acc[8];
  };
  typename Exec::template Local<State> st;
  const uint32_t table = ex.block() / a.ctas;
  const uint32_t cta = ex.block() - table * a.ctas;
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
  const uint32_t count = a.cq == 1 ? a.g.total : a.g.per_channel;
  const uint32_t stride = a.ctas * static_cast<uint32_t>(kGroups);
  for (uint32_t base = cta * static_cast<uint32_t>(kGroups); base < count; base += stride) {
    ex.threads([&](int t) {
      State& s = st[t];
      const uint32_t slot = base + static_cast<uint32_t>(s.l.group);
      s.l.active = slot < count;
      if (!s.l.active) return;
      s.l.b = a.cq == 1 ? slot_position(slot, a.g) : channel_slot_position(slot, static_cast<int>(table), a.g);
      float* xbuf = sh.buf + s.l.group * kGradGroupPitch;
      grad_columns(a.x, a.sx, a.gy, a.sg, a.g, s.l.b, s.l.i, xbuf, xbuf + kBlockFloats);
    });
    ex.sync_group();
    ex.threads([&](int t) {
      State& s = st[t];
      const float* xbuf = sh.buf + s.l.group * kGradGroupPitch;
      if (s.l.active) grad_rows(xbuf, xbuf + kBlockFloats, s.l.i, s.inv, s.acc);
    });
    ex.sync_group();  // the next write_column overwrites rows other lanes read above
  }
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
// itself and round(t) - t is taken on t = Z_x * scale / q = Z / q, so nothing
// else carries a scale.
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
