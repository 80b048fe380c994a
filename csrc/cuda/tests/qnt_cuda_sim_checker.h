// The memory model of the CUDA host simulation: every load and store the
// kernels make (through qnt_cuda_mem.cuh) is checked here.
//
// Global memory: the regions a launch may touch are registered by the
// simulated launcher (inputs: the exact span of each tensor view; outputs:
// dense buffers with a write count per element). A load outside every region,
// a load of an output element not yet written, or of one written in the same
// launch by another thread (no kernel here synchronises through global
// memory), a store outside an output, a second store to an element, and an
// output element left unwritten by the launch that must cover it (or unread by
// the launch that must consume it) are errors.
//
// Shared memory: one fresh, unwritten buffer per CTA. Barriers advance two
// counters: `cta_epoch` (__syncthreads) and `group_epoch` (__syncwarp of a
// group, and __syncthreads). An access by thread t to a word that another
// thread u wrote (or, for a store, read) is ordered only if a barrier both
// took part in lies between: a CTA barrier, or a group barrier when t and u
// are in the same group. Anything else is a race, whatever order the
// simulation happened to run the threads in; a read of a never-written word
// is an error too.
#pragma once

#include <c10/util/Exception.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gcln_fast {
namespace qnt_cuda {
namespace sim {

class Checker {
 public:
  // ---- launches and regions
  void begin_launch(const char* kernel, uint32_t grid);
  void end_launch();
  void add_input(const void* lo, std::size_t bytes, const char* name);
  // A dense output buffer of `bytes / elem` elements; `cover`: this launch must write every element.
  void add_output(const void* lo, std::size_t bytes, std::size_t elem, const char* name, bool cover);
  // This launch must read every element of the (already registered) output at `lo`.
  void expect_all_read(const void* lo);

  // ---- CTAs, threads and barriers (called by the host execution policy)
  void begin_cta(uint32_t cta, const void* smem, std::size_t bytes, int threads, int group_size);
  void end_cta();
  void begin_phase();
  void end_phase();
  void set_thread(int t) { tid_ = t; }
  void barrier(bool whole_cta);

  // ---- the hooks of qnt_cuda_mem.cuh
  void global_load(const void* p, std::size_t bytes);
  void global_store(const void* p, std::size_t bytes);
  void shared_load(const void* p, std::size_t bytes);
  void shared_store(const void* p, std::size_t bytes);
  void vector_access(const void* p, std::size_t alignment);

  // (kernel, grid) of every launch so far.
  const std::vector<std::pair<std::string, uint32_t>>& launches() const { return launches_; }

 private:
  struct Region {
    uintptr_t lo, hi;
    std::size_t elem;
    bool output;
    int cover_launch, consume_launch;
    std::string name;
    std::vector<uint8_t> writes, reads;
    std::vector<int64_t> writer;  // launch, CTA and thread of the write
  };
  struct Access {
    int tid;
    uint32_t cta_epoch, group_epoch;
  };
  struct Word {
    bool written = false;
    Access w{};
    std::vector<Access> reads;  // since the last write
  };

  [[noreturn]] void fail(const std::string& what) const;
  Region* find(uintptr_t p, std::size_t bytes);
  std::size_t element(const Region& r, uintptr_t p, std::size_t bytes, const char* access) const;
  int64_t me() const;
  std::string who(int64_t writer) const;
  bool ordered(const Access& a) const;
  Word& word(const void* p, std::size_t bytes, const char* access);

  std::vector<Region> regions_;
  std::vector<std::pair<std::string, uint32_t>> launches_;
  std::string kernel_;
  int launch_ = -1;
  uint32_t cta_ = 0;
  int tid_ = -1, threads_ = 0, group_size_ = 8;
  bool in_phase_ = false;
  uintptr_t smem_lo_ = 0, smem_hi_ = 0;
  std::vector<Word> words_;
  uint32_t cta_epoch_ = 0, group_epoch_ = 0;
};

// The checker the hooks report to (set by the simulated launcher).
Checker*& current_checker();

}  // namespace sim
}  // namespace qnt_cuda
}  // namespace gcln_fast
