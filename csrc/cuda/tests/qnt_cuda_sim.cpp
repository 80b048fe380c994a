// Host simulation of the CUDA QNT kernels (no GPU needed; tests/test_qnt_cuda_host_sim.py).
//
// It runs the host side of the real ops (qnt_cuda_launch.h: checks, geometry,
// launch shapes, arguments) and, for each launch, the kernel's CTA program
// (qnt_cuda_kernels.cuh) for every CTA of the grid and every thread of the
// CTA, phase by phase, with every memory access checked by the memory model
// (qnt_cuda_sim_checker.h). Only the execution policy and the memory hooks
// differ from the CUDA build (qnt_cuda.cu). The threads of a phase run in
// ascending, descending or a pseudo-random order (`order` 0, 1, 2), so a
// result that depends on the schedule also shows up as a difference between
// orders.
//
// Ops (CPU tensors), the CUDA ops' arguments plus the SM count the launch
// shapes assume and the thread order:
//   gcln_fast_cuda_sim::qnt(x, q, scale, surrogate, soft_forward, sm_count, order)
//   gcln_fast_cuda_sim::qnt_backward(grad_y, x, q, scale, surrogate, soft_forward,
//                                    need_grad_x, need_grad_q, sm_count, order)
//   gcln_fast_cuda_sim::launches() -> int[]: (kernel id, grid, detail) of each
//     launch of the last call (ids: 0 step tables, 1 forward, 2 backward,
//     3 grad_q final; detail: the forward's TableMode, else 0)
//   gcln_fast_cuda_sim::checker_selftest(fault): the checker on planted faults.
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <vector>

#include "qnt_cuda_launch.h"
#include "qnt_cuda_sim_checker.h"

namespace gcln_fast {
namespace qnt_cuda {
namespace sim {
namespace {

uint32_t mix(uint32_t h) {
  h ^= h >> 16;
  h *= 0x7feb352dU;
  h ^= h >> 15;
  h *= 0x846ca68bU;
  return h ^ (h >> 16);
}

// The host execution policy (see qnt_cuda_kernels.cuh).
template <int Threads>
struct HostExec {
  Checker* checker;
  uint32_t cta;
  int order;
  mutable uint32_t phase = 0;

  template <typename V>
  struct Local {
    std::vector<V> v = std::vector<V>(Threads);
    V& operator[](int t) { return v[t]; }
  };
  uint32_t block() const { return cta; }
  template <typename F>
  void threads(F&& f) const {
    int perm[Threads];
    std::iota(perm, perm + Threads, 0);
    if (order == 1) std::reverse(perm, perm + Threads);
    if (order == 2) {
      uint32_t h = mix(cta * 7919u + ++phase);
      for (int k = Threads - 1; k > 0; --k) {
        h = mix(h + static_cast<uint32_t>(k));
        std::swap(perm[k], perm[h % static_cast<uint32_t>(k + 1)]);
      }
    }
    checker->begin_phase();
    for (int k = 0; k < Threads; ++k) {
      checker->set_thread(perm[k]);
      f(perm[k]);
    }
    checker->end_phase();
  }
  void sync_group() const { checker->barrier(false); }
  void sync_cta() const { checker->barrier(true); }
};

// Exact byte span of an (N, C, H, W) view (strides are non-negative in torch).
template <typename T>
std::size_t view_bytes(const Geom& g, const Strides& s) {
  const int64_t last = (g.N - 1) * s.n + (g.C - 1) * s.c + (g.H - 1) * s.h + (g.W - 1) * s.w;
  return static_cast<std::size_t>(last + 1) * sizeof(T);
}

template <typename T>
void add_dense_output(Checker& c, const T* p, const Geom& g, const Strides& s, const char* name) {
  const std::size_t bytes = view_bytes<T>(g, s);
  const std::size_t elements = static_cast<std::size_t>(g.N) * g.C * g.H * g.W;
  TORCH_CHECK(bytes == elements * sizeof(T), "CUDA host simulation: output ", name, " is not dense");
  c.add_output(p, bytes, sizeof(T), name, true);
}

class SimLauncher {
 public:
  SimLauncher(int64_t sm_count, int64_t order) : sm_count_(static_cast<int>(sm_count)), order_(static_cast<int>(order)) {
    TORCH_CHECK(sm_count >= 1, "sm_count must be positive");
    TORCH_CHECK(order >= 0 && order <= 2, "order must be 0, 1 or 2");
    current_checker() = &checker_;
  }
  ~SimLauncher() { current_checker() = nullptr; }
  SimLauncher(const SimLauncher&) = delete;
  SimLauncher& operator=(const SimLauncher&) = delete;

  int sm_count(const at::Tensor&) const { return sm_count_; }

  void step_tables(uint32_t grid, const StepTableArgs& a) {
    begin("step_table_kernel", grid);
    checker_.add_input(a.q, a.entries * sizeof(float), "q");
    checker_.add_output(a.tables, (a.entries / 64) * kTableFloats * sizeof(float), sizeof(float), "step tables", false);
    run<kThreads, Empty>(grid, [&](const HostExec<kThreads>& ex, Empty&) { step_table_cta(ex, a); });
  }

  template <typename T>
  void forward(uint32_t grid, const ForwardArgs<T>& a, block::Surrogate s, bool soft) {
    begin("qnt_forward_kernel", grid, static_cast<int64_t>(a.mode));
    checker_.add_input(a.x, view_bytes<T>(a.g, a.sx), "x");
    checker_.add_input(a.q, a.m.count * 64 * sizeof(float), "q");
    add_dense_output(checker_, a.y, a.g, a.sy, "y");
    // As launch_forward (qnt_cuda_forward.cu) picks the instantiation.
    with_surrogate(soft ? s : block::Surrogate::kIdentity, [&](auto sc) {
      constexpr block::Surrogate S = decltype(sc)::value;
      run<kThreads, ForwardShared>(grid, [&](const HostExec<kThreads>& ex, ForwardShared& sh) {
        forward_cta<HostExec<kThreads>, T, S, S != block::Surrogate::kIdentity>(ex, a, sh);
      });
    });
  }

  template <typename T>
  void backward(uint32_t grid, const BackwardArgs<T>& a, block::Surrogate s) {
    begin("qnt_backward_kernel", grid);
    checker_.add_input(a.gy, view_bytes<T>(a.g, a.sg), "grad_y");
    checker_.add_input(a.x, view_bytes<T>(a.g, a.sx), "x");
    checker_.add_input(a.q, a.m.count * 64 * sizeof(float), "q");
    if (a.gx != nullptr) add_dense_output(checker_, a.gx, a.g, a.sgx, "grad_x");
    if (a.partials != nullptr) {
      checker_.add_output(a.partials, static_cast<std::size_t>(grid) * 64 * sizeof(float), sizeof(float), "partials",
                          true);
    }
    with_surrogate(s, [&](auto sc) {
      run<kThreads, BackwardShared>(grid, [&](const HostExec<kThreads>& ex, BackwardShared& sh) {
        backward_cta<HostExec<kThreads>, T, decltype(sc)::value>(ex, a, sh);
      });
    });
  }

  void grad_q_final(uint32_t grid, const GradQFinalArgs& a) {
    begin("qnt_grad_q_final_kernel", grid);
    checker_.expect_all_read(a.partials);
    checker_.add_output(a.out, static_cast<std::size_t>(grid) * 64 * sizeof(float), sizeof(float), "grad_q", true);
    run<kFinalThreads, GradQFinalShared>(
        grid, [&](const HostExec<kFinalThreads>& ex, GradQFinalShared& sh) { grad_q_final_cta(ex, a, sh); });
  }

  std::vector<int64_t> launches() const {
    static const char* names[] = {"step_table_kernel", "qnt_forward_kernel", "qnt_backward_kernel",
                                  "qnt_grad_q_final_kernel"};
    std::vector<int64_t> out;
    for (std::size_t k = 0; k < checker_.launches().size(); ++k) {
      const auto& [kernel, grid] = checker_.launches()[k];
      out.push_back(std::find_if(std::begin(names), std::end(names), [&](const char* n) { return kernel == n; }) -
                    std::begin(names));
      out.push_back(grid);
      out.push_back(detail_[k]);
    }
    return out;
  }

 private:
  struct Empty {};

  void begin(const char* kernel, uint32_t grid, int64_t detail = 0) {
    checker_.begin_launch(kernel, grid);
    detail_.push_back(detail);
  }

  // Every CTA of the grid in turn, each with fresh (NaN-filled, unwritten) shared memory.
  template <int Threads, typename Shared, typename Program>
  void run(uint32_t grid, Program&& program) {
    auto shared = std::make_unique<Shared>();
    for (uint32_t cta = 0; cta < grid; ++cta) {
      float nan = std::nanf("");
      for (std::size_t k = 0; k < sizeof(Shared) / sizeof(float); ++k) {
        std::memcpy(reinterpret_cast<char*>(shared.get()) + k * sizeof(float), &nan, sizeof(float));
      }
      checker_.begin_cta(cta, shared.get(), sizeof(Shared), Threads, 8);
      program(HostExec<Threads>{&checker_, cta, order_}, *shared);
      checker_.end_cta();
    }
    checker_.end_launch();
  }

  Checker checker_;
  std::vector<int64_t> detail_;
  int sm_count_, order_;
};

std::vector<int64_t>& last_launches() {
  static std::vector<int64_t> v;
  return v;
}

at::Tensor sim_qnt(const at::Tensor& x, const at::Tensor& q, double scale, c10::string_view surrogate,
                   bool soft_forward, int64_t sm_count, int64_t order) {
  TORCH_CHECK(x.is_cpu(), "the CUDA host simulation runs on CPU tensors");
  const block::Surrogate s = parse_surrogate(surrogate);
  SimLauncher launch(sm_count, order);
  at::Tensor y = qnt_forward(x, q, scale, s, soft_forward, launch);
  last_launches() = launch.launches();
  return y;
}

std::tuple<at::Tensor, at::Tensor> sim_qnt_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& q,
                                                    double scale, c10::string_view surrogate, bool /*soft_forward*/,
                                                    bool need_grad_x, bool need_grad_q, int64_t sm_count,
                                                    int64_t order) {
  TORCH_CHECK(x.is_cpu(), "the CUDA host simulation runs on CPU tensors");
  const block::Surrogate s = parse_surrogate(surrogate);
  SimLauncher launch(sm_count, order);
  auto out = qnt_backward(grad_y, x, q, scale, s, need_grad_x, need_grad_q, launch);
  last_launches() = launch.launches();
  return out;
}

std::vector<int64_t> sim_launches() { return last_launches(); }

// Small programs with one known fault each (0: none), for the test that the
// checker reports what it must; a fault the checker missed returns normally.
void checker_selftest(int64_t fault) {
  Checker c;
  current_checker() = &c;
  struct Reset {
    ~Reset() { current_checker() = nullptr; }
  } reset;
  std::vector<float> in(64, 1.0f), out(32, 0.0f);
  alignas(16) float sh[64 + 4];
  c.begin_launch("selftest", 1);
  c.add_input(in.data(), in.size() * sizeof(float), "in");
  c.add_output(out.data(), out.size() * sizeof(float), sizeof(float), "out", true);
  c.begin_cta(0, sh, 64 * sizeof(float), 32, 8);
  const HostExec<32> ex{&c, 0, 0};
  // Phase 1: thread t writes word t (and, fault 4, never word 1).
  ex.threads([&](int t) {
    if (fault != 4 || t != 1) shared_store(sh + t, global_load(in.data() + t));
    if (fault == 8 && t == 0) (void)global_load(in.data() + 64);
    if (fault == 10 && t == 0) shared_load8(sh + 2, sh + 32);
  });
  if (fault == 9) {
    ex.threads([&](int) { ex.sync_group(); });
  }
  if (fault != 1) ex.sync_group();
  // Phase 2: thread t reads the word of its group neighbour (fault 2: of the next group).
  ex.threads([&](int t) {
    const int src = fault == 2 ? (t + 8) % 32 : (t & ~7) | ((t + 1) & 7);
    float v = shared_load(sh + src);
    if (fault == 5 && t == 3) v += shared_load(sh + 64);
    if (fault != 7 || t != 5) global_store(out.data() + t, v);
    if (fault == 6 && t == 6) global_store(out.data() + 7, v);
  });
  // Fault 3: a thread overwrites a word its neighbour read, with no barrier between.
  if (fault == 3) ex.threads([&](int t) { shared_store(sh + t, 0.0f); });
  c.end_cta();
  c.end_launch();
}

}  // namespace
}  // namespace sim
}  // namespace qnt_cuda
}  // namespace gcln_fast

TORCH_LIBRARY(gcln_fast_cuda_sim, m) {
  m.def("qnt(Tensor x, Tensor q, float scale, str surrogate, bool soft_forward, int sm_count, int order) -> Tensor");
  m.def(
      "qnt_backward(Tensor grad_y, Tensor x, Tensor q, float scale, str surrogate, bool soft_forward, "
      "bool need_grad_x, bool need_grad_q, int sm_count, int order) -> (Tensor, Tensor)");
  m.def("launches() -> int[]", &gcln_fast::qnt_cuda::sim::sim_launches);
  m.def("checker_selftest(int fault) -> ()", &gcln_fast::qnt_cuda::sim::checker_selftest);
}

TORCH_LIBRARY_IMPL(gcln_fast_cuda_sim, CPU, m) {
  m.impl("qnt", &gcln_fast::qnt_cuda::sim::sim_qnt);
  m.impl("qnt_backward", &gcln_fast::qnt_cuda::sim::sim_qnt_backward);
}
