// Load a graphdesc .pt2 package (graphdesc::Package, graphdesc/include/graphdesc/package.hpp,
// over libtorch's AOTInductor loader) and evaluate a
// periodic crystal the way a domain-decomposed MD engine does: cut into slabs,
// each slab passed as its local atoms plus a halo of ghost atoms.
//
//   graphdesc_md MODEL.pt2 [NCELL [LATTICE [SEED [SLABS [TILT]]]]]
//
// The crystal is NCELL^3 fcc cells (4 atoms each, lattice constant LATTICE in
// Angstrom) in a triclinic box whose second vector leans by TILT (a fraction of
// its length) along x; every atom is displaced by a deterministic pseudo-random
// offset (SEED) of up to 0.1 Angstrom, and atom i has type i % ntypes. The box
// is cut into SLABS slabs along its first fractional coordinate (default 1).
//
// Each slab is one package call (graphdesc/export/schema.py):
//   * nodes: the slab's local atoms, then its ghosts: every periodic image of
//     an atom within rcut of a local atom, except the local atoms themselves,
//     each with its own coordinates (no shifts, as an engine passes them);
//   * edges: (src, dst) for every neighbor within rcut of a local center, with
//     edge_vec = x[src] - x[dst] computed from the node coordinates;
//   * inputs: atype (local types), edge_index, edge_vec, edge_mask, n_node = [L],
//     ghost_atype (ghost types).
// The energies and virials of the slabs add up; each node's force (ghosts too)
// goes back to the atom it is a copy of (an engine's reverse communication).
// The output is plain text (positions, cell, types, energy, virial, forces) so
// that a test can rebuild the same structure in Python and compare.

#include "graphdesc/package.hpp"  // graphdesc::Package: the package as one call

#include <torch/torch.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// "<key>": <number> inside the config JSON (the only fields this program needs).
double read_number(const std::string& config, const std::string& name) {
  const std::string key = "\"" + name + "\":";
  const auto at = config.find(key);
  if (at == std::string::npos) throw std::runtime_error("no " + name + " in graphdesc.config metadata");
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

using Vec3 = std::array<double, 3>;

// One slab's call: local atoms then ghosts, and the edges of the local centers.
struct Slab {
  std::vector<int64_t> owner;  // node -> crystal atom
  std::vector<Vec3> x;         // node coordinates
  int64_t nlocal = 0;
  std::vector<int64_t> src, dst;
};

Slab build_slab(const std::vector<Vec3>& pos, const std::vector<double>& frac0, const double cell[3][3],
                int slab, int nslab, double rcut, int reach) {
  Slab s;
  const int64_t n = static_cast<int64_t>(pos.size());
  std::vector<int64_t> local_node(n, -1);
  for (int64_t i = 0; i < n; ++i)
    if (static_cast<int>(std::floor(frac0[i] * nslab)) == slab) {
      local_node[i] = s.nlocal++;
      s.owner.push_back(i);
      s.x.push_back(pos[i]);
    }
  std::map<std::array<int64_t, 4>, int64_t> ghost_node;  // (atom, image shift) -> node
  std::vector<std::array<int64_t, 4>> ghost_keys;
  std::vector<std::array<int64_t, 2>> pairs;  // (center atom's node, neighbor key index or local node)
  for (int64_t c = 0; c < n; ++c) {
    if (local_node[c] < 0) continue;
    for (int64_t j = 0; j < n; ++j)
      for (int a = -reach; a <= reach; ++a)
        for (int b = -reach; b <= reach; ++b)
          for (int d = -reach; d <= reach; ++d) {
            if (j == c && a == 0 && b == 0 && d == 0) continue;
            Vec3 y;
            for (int k = 0; k < 3; ++k) y[k] = pos[j][k] + a * cell[0][k] + b * cell[1][k] + d * cell[2][k];
            const double r2 = (y[0] - pos[c][0]) * (y[0] - pos[c][0]) + (y[1] - pos[c][1]) * (y[1] - pos[c][1]) +
                              (y[2] - pos[c][2]) * (y[2] - pos[c][2]);
            if (r2 >= rcut * rcut) continue;
            int64_t node;
            if (local_node[j] >= 0 && a == 0 && b == 0 && d == 0) {
              node = local_node[j];
            } else {
              const std::array<int64_t, 4> key{j, a, b, d};
              auto it = ghost_node.find(key);
              if (it == ghost_node.end()) {
                it = ghost_node.emplace(key, -1 - static_cast<int64_t>(ghost_keys.size())).first;
                ghost_keys.push_back(key);
              }
              node = it->second;  // negative: a ghost, numbered once all are known
            }
            pairs.push_back({local_node[c], node});
          }
  }
  for (const auto& key : ghost_keys) {  // ghosts after the locals, with their image coordinates
    Vec3 y;
    for (int k = 0; k < 3; ++k)
      y[k] = pos[key[0]][k] + key[1] * cell[0][k] + key[2] * cell[1][k] + key[3] * cell[2][k];
    s.owner.push_back(key[0]);
    s.x.push_back(y);
  }
  for (const auto& p : pairs) {
    s.dst.push_back(p[0]);
    s.src.push_back(p[1] >= 0 ? p[1] : s.nlocal + (-1 - p[1]));
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " MODEL.pt2 [NCELL [LATTICE [SEED [SLABS [TILT]]]]]\n";
    return 2;
  }
  const std::string path = argv[1];
  const int ncell = argc > 2 ? std::stoi(argv[2]) : 2;
  const double a = argc > 3 ? std::stod(argv[3]) : 3.61;
  uint64_t state = argc > 4 ? std::stoull(argv[4]) : 7;
  const int nslab = argc > 5 ? std::stoi(argv[5]) : 1;
  const double tilt = argc > 6 ? std::stod(argv[6]) : 0.0;

  graphdesc::Package package(path);
  auto meta = package.metadata();
  if (meta.count("graphdesc.schema") == 0 || std::stoi(meta.at("graphdesc.schema")) < 2) {
    std::cerr << path << ": a schema-1 package has no ghost atoms; re-export it with graphdesc export\n";
    return 1;
  }
  const double rcut = read_number(meta.at("graphdesc.config"), "rcut");
  const int ntypes = static_cast<int>(read_number(meta.at("graphdesc.config"), "ntypes"));
  const auto dtype = meta.at("graphdesc.dtype") == "float32" ? torch::kFloat32 : torch::kFloat64;

  // an ncell^3 fcc crystal in a triclinic box, slightly perturbed
  const double side = ncell * a;
  const double cell[3][3] = {{side, 0, 0}, {tilt * side, side, 0}, {0, 0, side}};
  const double basis[4][3] = {{0, 0, 0}, {0.5, 0.5, 0}, {0.5, 0, 0.5}, {0, 0.5, 0.5}};
  std::vector<Vec3> pos;
  std::vector<double> frac0;  // first fractional coordinate, wrapped to [0, 1): which slab
  for (int i = 0; i < ncell; ++i)
    for (int j = 0; j < ncell; ++j)
      for (int k = 0; k < ncell; ++k)
        for (const auto& b : basis) {
          const double f[3] = {(i + b[0]) / ncell, (j + b[1]) / ncell, (k + b[2]) / ncell};
          Vec3 x;
          for (int c = 0; c < 3; ++c)
            x[c] = f[0] * cell[0][c] + f[1] * cell[1][c] + f[2] * cell[2][c] + 0.2 * (unit_random(state) - 0.5);
          pos.push_back(x);
          // fractional coordinate along the first vector: cell is lower-triangular here
          const double f1 = x[1] / side, f0 = (x[0] - f1 * tilt * side) / side;
          frac0.push_back(f0 - std::floor(f0));
        }
  const int64_t n = static_cast<int64_t>(pos.size());
  // images needed: the smallest plane spacing of this box is side / sqrt(1 + tilt^2)
  const int reach = static_cast<int>(std::ceil(rcut / (side / std::sqrt(1.0 + tilt * tilt)))) + 1;

  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  double energy = 0.0;
  std::vector<double> virial(9, 0.0), force(3 * n, 0.0);
  std::printf("atoms %lld rcut %.6f slabs %d\n", static_cast<long long>(n), rcut, nslab);
  std::printf("malloc %s\n", graphdesc::keep_freed_memory().c_str());
  for (int slab = 0; slab < nslab; ++slab) {
    const Slab s = build_slab(pos, frac0, cell, slab, nslab, rcut, reach);
    const int64_t nodes = static_cast<int64_t>(s.owner.size()), e = static_cast<int64_t>(s.src.size());
    std::vector<int64_t> types(nodes);
    for (int64_t i = 0; i < nodes; ++i) types[i] = s.owner[i] % ntypes;
    std::vector<double> vec(3 * e);
    for (int64_t k = 0; k < e; ++k)
      for (int c = 0; c < 3; ++c) vec[3 * k + c] = s.x[s.src[k]][c] - s.x[s.dst[k]][c];
    auto all_types = torch::tensor(types, i64);
    auto atype = all_types.slice(0, 0, s.nlocal).clone();
    auto ghost_atype = all_types.slice(0, s.nlocal, nodes).clone();
    auto edge_index = torch::empty({2, e}, i64);
    edge_index[0] = torch::tensor(s.src, i64);
    edge_index[1] = torch::tensor(s.dst, i64);
    auto edge_vec = torch::tensor(vec, f64).reshape({e, 3}).to(dtype);
    auto edge_mask = torch::ones({e}, torch::TensorOptions().dtype(torch::kBool));
    auto n_node = torch::full({1}, s.nlocal, i64);

    // inputs and outputs in the schema's order
    auto out = package.run({atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype});
    energy += out[0].to(torch::kFloat64)[0].item<double>();
    auto f = out[2].to(torch::kFloat64).contiguous();
    auto w = out[3].to(torch::kFloat64).contiguous();
    auto fa = f.accessor<double, 2>();
    for (int64_t i = 0; i < nodes; ++i)  // reverse communication: every node's force to its owner
      for (int c = 0; c < 3; ++c) force[3 * s.owner[i] + c] += fa[i][c];
    for (int c = 0; c < 9; ++c) virial[c] += w.view({-1})[c].item<double>();
    std::printf("slab %d local %lld ghosts %lld edges %lld\n", slab, static_cast<long long>(s.nlocal),
                static_cast<long long>(nodes - s.nlocal), static_cast<long long>(e));
  }

  for (int64_t i = 0; i < n; ++i) std::printf("pos %.17g %.17g %.17g\n", pos[i][0], pos[i][1], pos[i][2]);
  for (int r = 0; r < 3; ++r) std::printf("cell %.17g %.17g %.17g\n", cell[r][0], cell[r][1], cell[r][2]);
  std::printf("energy %.17g\n", energy);
  std::printf("virial");
  for (int c = 0; c < 9; ++c) std::printf(" %.17g", virial[c]);
  std::printf("\n");
  for (int64_t i = 0; i < n; ++i)
    std::printf("force %.17g %.17g %.17g\n", force[3 * i], force[3 * i + 1], force[3 * i + 2]);
  return 0;
}
