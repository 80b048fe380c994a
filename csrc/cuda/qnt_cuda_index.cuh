// Indexing of the CUDA QNT kernels: which thread handles which pixels, where
// they live in memory, and the shared-memory transposes between the column
// and the row passes. Free of CUDA-only constructs outside `__CUDA_ARCH__`
// branches: the host simulation (csrc/cuda/tests/, run by
// tests/test_qnt_cuda_host_sim.py in CI) compiles this same code with g++ and
// runs it for every thread of the real launches, phase by phase, with every
// memory access checked (nothing runs on a GPU in CI).
//
// Thread mapping (both kernels): a group of 8 consecutive threads owns one
// 8x8 block; thread i of the group owns pixel column i of that block. A warp is
// then 4 horizontally adjacent blocks x 8 columns = 32 consecutive pixels of
// each of 8 image rows, so in NCHW every global load and store instruction of
// the warp touches one contiguous 128-byte (fp32) or 64-byte (fp16/bf16) run:
// the access pattern of an elementwise copy kernel, with plain scalar accesses
// and no vector-alignment preconditions, so contiguous, sliced, offset and
// channels-last layouts share one code path (for channels-last, Geom orders
// the blocks so that a warp's groups interleave channels instead). The column pass of the DCT runs in registers; one
// transpose through shared memory (per group, synchronised with __syncwarp)
// turns columns into rows for the row pass and quantization, and a second one
// turns them back for the inverse column pass and the store: the forward DCT
// runs columns then rows and the inverse rows then columns, each 8-point pass
// being block::fdct8 / block::idct8, the CPU kernel's arithmetic.
#pragma once

#include <cmath>
#include <cstdint>

#include "qnt_block.h"
#include "qnt_cuda_mem.cuh"

// `#pragma unroll` for device code only (the host compiler warns about it).
#if defined(__CUDA_ARCH__)
#define GCLN_PRAGMA(x) _Pragma(#x)
#else
#define GCLN_PRAGMA(x)
#endif
#define GCLN_UNROLL GCLN_PRAGMA(unroll)

namespace gcln_fast {
namespace qnt_cuda {

constexpr int kThreads = 256;                  // threads per CTA
constexpr int kGroups = kThreads / 8;          // 8x8 blocks per CTA (one per 8-thread group)
// Shared-memory block layout: row r, column j of a block at r * kRowPitch + j.
// A pitch of 12 floats keeps each row 16-byte aligned (rows move as two
// float4) and makes the 8 rows of one float4 access hit 8 disjoint groups of
// 4 banks (12 * r mod 32 = 0, 12, 24, 4, 16, 28, 8, 20): conflict-free.
constexpr int kRowPitch = 12;
constexpr int kBlockFloats = 8 * kRowPitch;    // 96
// Group pitches are 8 (mod 32) floats, so the 4 groups of a warp, each reading
// or writing one element per column, use 4 disjoint sets of 8 banks.
constexpr int kFwdGroupPitch = kBlockFloats + 8;        // 104: one block buffer
constexpr int kGradGroupPitch = 2 * kBlockFloats + 8;   // 200: x and grad_y buffers

// Unsigned division by a runtime constant with a multiply-high and a shift
// (Granlund-Montgomery, as ATen's IntDivider): exact for dividends and
// divisors in [1, 2^31).
struct FastDiv {
  uint32_t divisor = 1;
  uint32_t magic = 0;
  uint32_t shift = 0;

  FastDiv() = default;
  explicit FastDiv(uint32_t d) : divisor(d) {
    while (shift < 32 && (uint64_t{1} << shift) < d) ++shift;
    magic = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }
  GCLN_HD uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t hi = __umulhi(n, magic);
#else
    const uint32_t hi = static_cast<uint32_t>((static_cast<uint64_t>(n) * magic) >> 32);
#endif
    return (hi + n) >> shift;
  }
};

// Element strides of an (N, C, H, W) tensor.
struct Strides {
  int64_t n, c, h, w;
};

// The shape, in pixels and in 8x8 blocks, and the order in which consecutive
// groups walk the blocks.
struct Geom {
  int N, C, H, W;
  int Hb, Wb;            // ceil(H / 8), ceil(W / 8)
  uint32_t total;        // N * C * Hb * Wb
  uint32_t per_channel;  // N * Hb * Wb
  FastDiv div_wb, div_hb, div_c;
  // Plane-major order (bx fastest) puts a warp's 4 blocks side by side in
  // memory when W is the unit-stride dimension (NCHW). For channels-last
  // input the unit stride is C, so the blocks of all channels at one (by, bx)
  // come first: the 4 groups of a warp then read interleaved channels of the
  // same pixels and their loads share cache sectors.
  bool channel_fastest;
};

struct BlockPos {
  int n, c, by, bx;
};

// Block `slot` of the whole tensor, in the launch order of Geom.
GCLN_HD BlockPos slot_position(uint32_t slot, const Geom& g) {
  BlockPos b;
  if (g.channel_fastest) {
    const uint32_t t0 = g.div_c.div(slot);
    b.c = static_cast<int>(slot - t0 * static_cast<uint32_t>(g.C));
    const uint32_t t1 = g.div_wb.div(t0);
    b.bx = static_cast<int>(t0 - t1 * static_cast<uint32_t>(g.Wb));
    const uint32_t t2 = g.div_hb.div(t1);
    b.by = static_cast<int>(t1 - t2 * static_cast<uint32_t>(g.Hb));
    b.n = static_cast<int>(t2);
  } else {
    const uint32_t t0 = g.div_wb.div(slot);
    b.bx = static_cast<int>(slot - t0 * static_cast<uint32_t>(g.Wb));
    const uint32_t t1 = g.div_hb.div(t0);
    b.by = static_cast<int>(t0 - t1 * static_cast<uint32_t>(g.Hb));
    const uint32_t t2 = g.div_c.div(t1);
    b.c = static_cast<int>(t1 - t2 * static_cast<uint32_t>(g.C));
    b.n = static_cast<int>(t2);
  }
  return b;
}

// The q tables as the kernels see them: block (n, c) uses table
// n * qsn + c * qsc of the canonical (Nq, Cq, 8, 8) table, with qsn = Cq when
// Nq > 1 (else 0) and qsc = 1 when Cq > 1 (else 0). Index arithmetic only:
// per-sample tables cost what a shared table does.
struct TableMap {
  int nq, cq;    // the canonical table's Nq, Cq
  int qsn, qsc;  // table index strides
  int count;     // nq * cq
  // Blocks that use one table: n in {tn} (nq > 1) or all N; c in {tc} (cq > 1)
  // or all C; every (by, bx). `per_table` of them, `cc` channels each.
  uint32_t per_table;
  int cc;
};

GCLN_HD int table_of(const BlockPos& b, const TableMap& m) { return b.n * m.qsn + b.c * m.qsc; }

// Block j (of m.per_table) of table t, in the order of Geom (channels fastest
// for channels-last input when the table spans several channels, else bx fastest).
GCLN_HD BlockPos table_slot_position(uint32_t j, int t, const Geom& g, const TableMap& m) {
  const int n0 = m.nq > 1 ? t / m.cq : 0;
  const int c0 = m.cq > 1 ? t - (t / m.cq) * m.cq : 0;
  BlockPos b;
  uint32_t rest = j;
  if (g.channel_fastest && m.cc > 1) {
    const uint32_t t0 = g.div_c.div(rest);
    b.c = static_cast<int>(rest - t0 * static_cast<uint32_t>(g.C));
    rest = t0;
  }
  const uint32_t t1 = g.div_wb.div(rest);
  b.bx = static_cast<int>(rest - t1 * static_cast<uint32_t>(g.Wb));
  const uint32_t t2 = g.div_hb.div(t1);
  b.by = static_cast<int>(t1 - t2 * static_cast<uint32_t>(g.Hb));
  if (g.channel_fastest && m.cc > 1) {
    b.n = n0 + static_cast<int>(t2);
  } else if (m.cc > 1) {
    const uint32_t t3 = g.div_c.div(t2);
    b.c = static_cast<int>(t2 - t3 * static_cast<uint32_t>(g.C));
    b.n = n0 + static_cast<int>(t3);
  } else {
    b.c = c0;
    b.n = n0 + static_cast<int>(t2);
  }
  return b;
}

GCLN_HD int imin(int a, int b) { return a < b ? a : b; }

template <typename T>
GCLN_HD float to_float(T v) {
  return static_cast<float>(v);
}

// Element (b.n, b.c, row h0, column w) of p: the top of a block column.
template <typename T>
GCLN_HD T* column_top(T* p, const Strides& s, const BlockPos& b, int w) {
  return p + (b.n * s.n + b.c * s.c + static_cast<int64_t>(b.by * 8) * s.h + w * s.w);
}

// Column i of block b, edge blocks completed by replicating the last row and
// column (the forward op's padding). Rows advance by pointer increments (one
// 64-bit add each, held back past the last row) rather than multiplies.
template <typename T>
GCLN_HD void load_column_replicate(const T* __restrict__ p, const Strides& s, const Geom& g, const BlockPos& b, int i,
                                   float v[8]) {
  const T* ptr = column_top(p, s, b, imin(b.bx * 8 + i, g.W - 1));
  const int last = g.H - 1 - b.by * 8;  // >= 0: the block starts inside the image
  GCLN_UNROLL
  for (int k = 0; k < 8; ++k) {
    v[k] = to_float(global_load(ptr));
    if (k < last) ptr += s.h;
  }
}

// Column i of block b, edge blocks completed with zeros (the adjoint of the
// crop: what grad_y is padded with).
template <typename T>
GCLN_HD void load_column_zero(const T* __restrict__ p, const Strides& s, const Geom& g, const BlockPos& b, int i,
                              float v[8]) {
  const int w = b.bx * 8 + i;
  const T* ptr = column_top(p, s, b, imin(w, g.W - 1));
  const int last = g.H - 1 - b.by * 8;
  GCLN_UNROLL
  for (int k = 0; k < 8; ++k) {
    const float e = to_float(global_load(ptr));  // in bounds (clamped) even where it is replaced by 0
    v[k] = (w < g.W && k <= last) ? e : 0.0f;
    if (k < last) ptr += s.h;
  }
}

// Writes the pixels of column i of block b that lie inside the image.
template <typename T>
GCLN_HD void store_column(T* __restrict__ p, const Strides& s, const Geom& g, const BlockPos& b, int i,
                          const float v[8]) {
  const int w = b.bx * 8 + i;
  if (w >= g.W) return;
  T* ptr = column_top(p, s, b, w);
  const int rows = g.H - b.by * 8;
  GCLN_UNROLL
  for (int k = 0; k < 8; ++k) {
    if (k < rows) {
      global_store(ptr, T(v[k]));
      ptr += s.h;
    }
  }
}

// Shared-memory transposes of one block. Thread i writes column i and reads
// row i (or the reverse); between the write and the read the 8 threads of the
// group synchronise (__syncwarp on the group's lanes). A thread only ever
// rewrites the row (column) it has just read itself, so no second barrier is
// needed inside one transpose.
GCLN_HD void write_column(float* buf, int i, const float v[8]) {
  GCLN_UNROLL
  for (int k = 0; k < 8; ++k) shared_store(buf + k * kRowPitch + i, v[k]);
}

GCLN_HD void read_column(const float* buf, int i, float v[8]) {
  GCLN_UNROLL
  for (int k = 0; k < 8; ++k) v[k] = shared_load(buf + k * kRowPitch + i);
}

GCLN_HD void read_row(const float* buf, int i, float v[8]) { shared_load8(buf + i * kRowPitch, v); }
GCLN_HD void write_row(float* buf, int i, const float v[8]) { shared_store8(buf + i * kRowPitch, v); }

// Step tables: entry (r, j) of a table at r * kRowPitch + j, so that thread i
// fetches the 8 steps of its coefficient row i as two conflict-free float4.
// Per table: the inverse steps (scale / q) then the steps (q / scale).
constexpr int kTableFloats = 2 * kBlockFloats;
// Tables a forward CTA holds in shared memory: all of them when there are at
// most this many (shared, per-channel up to 8 channels), else the range of
// consecutive tables its 32 blocks use (per-sample tables; see
// forward_table_mode in qnt_cuda_kernels.cuh). 6 KB of shared memory.
constexpr int kMaxSmemTables = 8;

}  // namespace qnt_cuda
}  // namespace gcln_fast
