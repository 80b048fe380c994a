// The memory model of the CUDA host simulation (see qnt_cuda_sim_checker.h).
#include "qnt_cuda_sim_checker.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "qnt_cuda_mem.cuh"

namespace gcln_fast {
namespace qnt_cuda {
namespace sim {

Checker*& current_checker() {
  static thread_local Checker* checker = nullptr;
  return checker;
}

static Checker& checker() {
  Checker* c = current_checker();
  TORCH_CHECK(c != nullptr, "CUDA host simulation: a kernel memory access outside a simulated launch");
  return *c;
}

// The hooks declared in qnt_cuda_mem.cuh.
void on_global_load(const void* p, std::size_t bytes) { checker().global_load(p, bytes); }
void on_global_store(const void* p, std::size_t bytes) { checker().global_store(p, bytes); }
void on_shared_load(const void* p, std::size_t bytes) { checker().shared_load(p, bytes); }
void on_shared_store(const void* p, std::size_t bytes) { checker().shared_store(p, bytes); }
void on_vector_access(const void* p, std::size_t alignment) { checker().vector_access(p, alignment); }

void Checker::fail(const std::string& what) const {
  std::ostringstream msg;
  msg << "CUDA host simulation: " << kernel_ << " (launch " << launch_ << "), CTA " << cta_;
  if (tid_ >= 0) msg << ", thread " << tid_ << " (group " << tid_ / group_size_ << ", lane " << tid_ % group_size_ << ")";
  msg << ": " << what;
  TORCH_CHECK(false, msg.str());
}

void Checker::begin_launch(const char* kernel, uint32_t grid) {
  kernel_ = kernel;
  ++launch_;
  launches_.emplace_back(kernel, grid);
  tid_ = -1;
  // What a CUDA launch would refuse ("invalid configuration argument").
  if (grid == 0 || grid > 0x7FFFFFFFu) fail("grid size " + std::to_string(grid) + " is not a valid CUDA grid");
}

void Checker::end_launch() {
  tid_ = -1;
  for (const Region& r : regions_) {
    for (std::size_t e = 0; e < r.writes.size(); ++e) {
      if (r.cover_launch == launch_ && r.writes[e] == 0) {
        fail("element " + std::to_string(e) + " of " + r.name + " was never written");
      }
      if (r.consume_launch == launch_ && r.reads[e] == 0) {
        fail("element " + std::to_string(e) + " of " + r.name + " was never read");
      }
    }
  }
}

void Checker::add_input(const void* lo, std::size_t bytes, const char* name) {
  const auto a = reinterpret_cast<uintptr_t>(lo);
  for (const Region& r : regions_) {
    if (r.lo == a && r.hi == a + bytes) return;  // the same buffer again (e.g. an output read back)
  }
  regions_.push_back(Region{a, a + bytes, 1, false, -1, -1, name, {}, {}, {}});
}

void Checker::add_output(const void* lo, std::size_t bytes, std::size_t elem, const char* name, bool cover) {
  const auto a = reinterpret_cast<uintptr_t>(lo);
  for (const Region& r : regions_) {
    if (a < r.hi && r.lo < a + bytes) fail(std::string("output ") + name + " overlaps " + r.name);
  }
  const std::size_t n = bytes / elem;
  regions_.push_back(Region{a, a + bytes, elem, true, cover ? launch_ : -1, -1, name, std::vector<uint8_t>(n, 0),
                            std::vector<uint8_t>(n, 0), std::vector<int64_t>(n, -1)});
}

void Checker::expect_all_read(const void* lo) {
  for (Region& r : regions_) {
    if (r.output && r.lo == reinterpret_cast<uintptr_t>(lo)) {
      r.consume_launch = launch_;
      std::fill(r.reads.begin(), r.reads.end(), 0);
      return;
    }
  }
  fail("expect_all_read: no output registered there");
}

void Checker::begin_cta(uint32_t cta, const void* smem, std::size_t bytes, int threads, int group_size) {
  cta_ = cta;
  threads_ = threads;
  group_size_ = group_size;
  tid_ = -1;
  smem_lo_ = reinterpret_cast<uintptr_t>(smem);
  smem_hi_ = smem_lo_ + bytes;
  words_.assign(bytes / sizeof(float), Word{});
  cta_epoch_ = group_epoch_ = 0;
}

void Checker::end_cta() {
  tid_ = -1;
  smem_lo_ = smem_hi_ = 0;
}

void Checker::begin_phase() {
  if (in_phase_) fail("threads() called inside a threads() phase");
  in_phase_ = true;
}

void Checker::end_phase() {
  in_phase_ = false;
  tid_ = -1;
}

void Checker::barrier(bool whole_cta) {
  // A barrier inside a phase would be a barrier under divergent control flow.
  if (in_phase_) fail("a barrier inside a per-thread phase");
  if (whole_cta) ++cta_epoch_;
  ++group_epoch_;
}

// ---- global memory

Checker::Region* Checker::find(uintptr_t p, std::size_t bytes) {
  for (Region& r : regions_) {
    if (p >= r.lo && p + bytes <= r.hi) return &r;
  }
  return nullptr;
}

std::size_t Checker::element(const Region& r, uintptr_t p, std::size_t bytes, const char* access) const {
  if (bytes != r.elem || (p - r.lo) % r.elem != 0) {
    fail(std::string(access) + " of " + std::to_string(bytes) + " bytes at byte " + std::to_string(p - r.lo) +
         " of " + r.name + " does not match its elements");
  }
  return (p - r.lo) / r.elem;
}

int64_t Checker::me() const { return (static_cast<int64_t>(launch_) << 42) | (static_cast<int64_t>(cta_) << 11) | tid_; }

std::string Checker::who(int64_t writer) const {
  return "launch " + std::to_string(writer >> 42) + " CTA " + std::to_string((writer >> 11) & 0x7FFFFFFF) +
         " thread " + std::to_string(writer & 0x7FF);
}

void Checker::global_load(const void* ptr, std::size_t bytes) {
  const auto p = reinterpret_cast<uintptr_t>(ptr);
  if (p >= smem_lo_ && p < smem_hi_) fail("a global load of shared memory");
  Region* r = find(p, bytes);
  if (r == nullptr) fail("global load of " + std::to_string(bytes) + " bytes outside every tensor of the launch");
  if (!r->output) return;
  const std::size_t e = element(*r, p, bytes, "load");
  if (r->writes[e] == 0) fail("reads element " + std::to_string(e) + " of " + r->name + ", which was never written");
  if ((r->writer[e] >> 42) == launch_ && r->writer[e] != me()) {
    fail("reads element " + std::to_string(e) + " of " + r->name + " written in the same launch by " +
         who(r->writer[e]));
  }
  r->reads[e] = 1;
}

void Checker::global_store(const void* ptr, std::size_t bytes) {
  const auto p = reinterpret_cast<uintptr_t>(ptr);
  Region* r = find(p, bytes);
  if (r == nullptr || !r->output) fail("global store outside every output of the launch");
  const std::size_t e = element(*r, p, bytes, "store");
  if (r->writes[e] != 0) {
    fail("writes element " + std::to_string(e) + " of " + r->name + " a second time (first: " + who(r->writer[e]) +
         ")");
  }
  r->writes[e] = 1;
  r->writer[e] = me();
}

// ---- shared memory

bool Checker::ordered(const Access& a) const {
  return cta_epoch_ > a.cta_epoch || (a.tid / group_size_ == tid_ / group_size_ && group_epoch_ > a.group_epoch);
}

Checker::Word& Checker::word(const void* ptr, std::size_t bytes, const char* access) {
  const auto p = reinterpret_cast<uintptr_t>(ptr);
  if (!in_phase_) fail(std::string("shared ") + access + " outside a per-thread phase");
  if (p < smem_lo_ || p + bytes > smem_hi_ || bytes != sizeof(float) || (p - smem_lo_) % sizeof(float) != 0) {
    fail(std::string("shared ") + access + " at byte " + std::to_string(static_cast<int64_t>(p - smem_lo_)) +
         " outside the CTA's " + std::to_string(smem_hi_ - smem_lo_) + " bytes of shared memory");
  }
  return words_[(p - smem_lo_) / sizeof(float)];
}

void Checker::shared_load(const void* p, std::size_t bytes) {
  Word& w = word(p, bytes, "load");
  const std::size_t index = &w - words_.data();
  if (!w.written) fail("reads shared word " + std::to_string(index) + ", which no thread of the CTA wrote");
  if (w.w.tid != tid_ && !ordered(w.w)) {
    fail("reads shared word " + std::to_string(index) + " written by thread " + std::to_string(w.w.tid) +
         " with no barrier of both in between (missing __syncwarp/__syncthreads)");
  }
  if (w.reads.empty() || w.reads.back().tid != tid_ || w.reads.back().group_epoch != group_epoch_) {
    w.reads.push_back(Access{tid_, cta_epoch_, group_epoch_});
  }
}

void Checker::shared_store(const void* p, std::size_t bytes) {
  Word& w = word(p, bytes, "store");
  const std::size_t index = &w - words_.data();
  if (w.written && w.w.tid != tid_ && !ordered(w.w)) {
    fail("writes shared word " + std::to_string(index) + " that thread " + std::to_string(w.w.tid) +
         " wrote with no barrier of both in between");
  }
  for (const Access& r : w.reads) {
    if (r.tid != tid_ && !ordered(r)) {
      fail("writes shared word " + std::to_string(index) + " that thread " + std::to_string(r.tid) +
           " read with no barrier of both in between (missing __syncwarp/__syncthreads)");
    }
  }
  w.written = true;
  w.w = Access{tid_, cta_epoch_, group_epoch_};
  w.reads.clear();
}

void Checker::vector_access(const void* p, std::size_t alignment) {
  if (reinterpret_cast<uintptr_t>(p) % alignment != 0) {
    fail("a vector access at an address not aligned to " + std::to_string(alignment) + " bytes");
  }
}

}  // namespace sim
}  // namespace qnt_cuda
}  // namespace gcln_fast
