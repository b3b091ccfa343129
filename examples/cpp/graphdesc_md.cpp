// Load a graphdesc .pt2 package with libtorch's AOTInductor loader, build the
// neighbor graph of a small periodic fcc crystal, print energy and forces.
//
//   graphdesc_md MODEL.pt2 [NCELL [LATTICE [SEED]]]
//
// The crystal is NCELL^3 cubic fcc cells (4 atoms each) of lattice constant
// LATTICE (Angstrom), every atom displaced by a deterministic pseudo-random
// offset (SEED) of up to 0.1 Angstrom, all atoms of type 0. The output is
// plain text: the positions, then the energy, then one force row per atom, so
// that a test can rebuild the same structure in Python and compare.
//
// The graph follows the package schema (graphdesc/export/schema.py): one edge
// per (center, neighbor image) pair within rcut, edge_vec = r_src + shift - r_dst.
// The cutoff comes from the package metadata (graphdesc.config, a JSON string).

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// "rcut": <number> inside the config JSON (the only field this program needs).
double read_rcut(const std::string& config) {
  const std::string key = "\"rcut\":";
  const auto at = config.find(key);
  if (at == std::string::npos) throw std::runtime_error("no rcut in graphdesc.config metadata");
  return std::stod(config.substr(at + key.size()));
}

// A small deterministic generator (splitmix64) so Python can reproduce the positions.
double unit_random(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) / 9007199254740992.0;  // [0, 1)
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " MODEL.pt2 [NCELL [LATTICE [SEED]]]\n";
    return 2;
  }
  const std::string path = argv[1];
  const int ncell = argc > 2 ? std::stoi(argv[2]) : 2;
  const double a = argc > 3 ? std::stod(argv[3]) : 3.61;
  uint64_t state = argc > 4 ? std::stoull(argv[4]) : 7;

  torch::inductor::AOTIModelPackageLoader loader(path);
  auto meta = loader.get_metadata();
  const double rcut = read_rcut(meta.at("graphdesc.config"));
  const auto dtype = meta.at("graphdesc.dtype") == "float32" ? torch::kFloat32 : torch::kFloat64;

  // positions of an ncell^3 fcc crystal, slightly perturbed
  const double basis[4][3] = {{0, 0, 0}, {0.5, 0.5, 0}, {0.5, 0, 0.5}, {0, 0.5, 0.5}};
  std::vector<double> pos;
  for (int i = 0; i < ncell; ++i)
    for (int j = 0; j < ncell; ++j)
      for (int k = 0; k < ncell; ++k)
        for (const auto& b : basis) {
          pos.push_back((i + b[0]) * a + 0.2 * (unit_random(state) - 0.5));
          pos.push_back((j + b[1]) * a + 0.2 * (unit_random(state) - 0.5));
          pos.push_back((k + b[2]) * a + 0.2 * (unit_random(state) - 0.5));
        }
  const int64_t n = static_cast<int64_t>(pos.size() / 3);
  const double box = ncell * a;

  // all (dst, src, image) pairs within rcut: O(N^2 * images), fine for a small example
  const int reach = static_cast<int>(std::ceil(rcut / box));
  std::vector<int64_t> src, dst;
  std::vector<double> vec;
  for (int64_t c = 0; c < n; ++c)
    for (int64_t s = 0; s < n; ++s)
      for (int x = -reach; x <= reach; ++x)
        for (int y = -reach; y <= reach; ++y)
          for (int z = -reach; z <= reach; ++z) {
            if (s == c && x == 0 && y == 0 && z == 0) continue;
            const double d[3] = {pos[3 * s] + x * box - pos[3 * c], pos[3 * s + 1] + y * box - pos[3 * c + 1],
                                 pos[3 * s + 2] + z * box - pos[3 * c + 2]};
            if (d[0] * d[0] + d[1] * d[1] + d[2] * d[2] < rcut * rcut) {
              src.push_back(s);
              dst.push_back(c);
              vec.insert(vec.end(), d, d + 3);
            }
          }
  const int64_t e = static_cast<int64_t>(src.size());
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  auto edge_index = torch::empty({2, e}, i64);
  edge_index[0] = torch::tensor(src, i64);
  edge_index[1] = torch::tensor(dst, i64);
  auto edge_vec = torch::tensor(vec, torch::TensorOptions().dtype(torch::kFloat64)).reshape({e, 3}).to(dtype);
  auto edge_mask = torch::ones({e}, torch::TensorOptions().dtype(torch::kBool));
  auto atype = torch::zeros({n}, i64);
  auto n_node = torch::full({1}, n, i64);

  // inputs and outputs in the schema's order
  auto out = loader.run({atype, edge_index, edge_vec, edge_mask, n_node});
  auto energy = out[0].to(torch::kFloat64);
  auto force = out[2].to(torch::kFloat64).contiguous();

  std::printf("atoms %lld edges %lld rcut %.6f\n", static_cast<long long>(n), static_cast<long long>(e), rcut);
  for (int64_t i = 0; i < n; ++i) std::printf("pos %.17g %.17g %.17g\n", pos[3 * i], pos[3 * i + 1], pos[3 * i + 2]);
  std::printf("box %.17g\n", box);
  std::printf("energy %.17g\n", energy[0].item<double>());
  auto f = force.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) std::printf("force %.17g %.17g %.17g\n", f[i][0], f[i][1], f[i][2]);
  return 0;
}
