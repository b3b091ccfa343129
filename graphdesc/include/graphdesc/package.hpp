// graphdesc::Package: run a graphdesc .pt2 package from C++ as one call.
//
//   graphdesc::Package package("model.pt2");
//   auto out = package.run({atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype});
//   // out: energy (nf), atom_energy (N), force (N, 3), virial (nf, 3, 3), atom_virial (N, 3, 3)
//
// Inputs and outputs are the package schema's (graphdesc/export/schema.py). A
// schema-3 package holds three compiled programs: the edge stage ("edges"),
// the block stage ("block") and the tail ("tail"); run() calls the block stage
// on chunks of centers, so the attention's activations of only one chunk are
// alive at a time, exactly as graphdesc.export.stages.run_stages does in
// Python. Packages of schema 1 and 2 hold one program ("model"), called as is.
// Packages exported with attention "pairs" or "buckets" have ragged parts (edge
// rows, then center rows; graphdesc/descriptor/ragged.py): a chunk is centers
// a:b with their edge rows, cut by the rule of ragged_cuts there.
// GRAPHDESC_CHUNK_ELEMENTS (floats in a chunk's largest temporary; 0 = one chunk)
// overrides the package's chunk size, as for the Python loader. The first Package
// of a process sets graphdesc's malloc policy (keep_freed_memory below).
//
// Header-only; needs libtorch (torch/csrc/inductor/aoti_package). Part of
// graphdesc: find its folder with python -c "import graphdesc.export as e; print(e.include_dir())".

#pragma once

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace graphdesc {

// graphdesc's malloc policy (graphdesc/allocator.py), for programs that run packages without Python (LAMMPS):
// with glibc, blocks up to 32 MiB come from the heap and up to 1 GiB of free heap is kept, so a call does not
// take its temporaries back from the kernel page by page (a package call on fcc Cu faulted 12,679-67,291
// pages per call with glibc's defaults: benchmarks/bench_allocator.py). Nothing when the C library is not
// glibc or the user set any of the variables below. Returns which policy the process runs under, in words
// (the first call decides; later calls say the same).
inline std::string keep_freed_memory() {
  static const std::string said = [] {
#if defined(__GLIBC__)
    const std::string ours = "MALLOC_MMAP_THRESHOLD_=33554432, MALLOC_TRIM_THRESHOLD_=1073741824";
    std::string chosen;
    for (const char *name : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                             "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES"})
      if (const char *value = std::getenv(name))
        chosen += (chosen.empty() ? "" : ", ") + std::string(name) + "=" + value;
    if (chosen == ours) return ours + " (graphdesc's)";  // inherited from a parent that imported graphdesc
    if (!chosen.empty()) return chosen + " (set by the user)";
    // the threshold first: M_TRIM_THRESHOLD alone would fix M_MMAP_THRESHOLD at its 128 KiB default
    if (mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1)
      return ours + " (graphdesc's)";
#endif
    return std::string("the C library's default");
  }();
  return said;
}

class Package {
 public:
  using Loader = torch::inductor::AOTIModelPackageLoader;

  explicit Package(const std::string &path) {
    keep_freed_memory();  // the first Package of a process sets the policy
    try {
      edges_ = std::make_unique<Loader>(path, "edges");
    } catch (const std::exception &) {  // no "edges" program: a one-program package (schema 1 or 2)
      model_ = std::make_unique<Loader>(path, "model");
      return;
    }
    block_ = std::make_unique<Loader>(path, "block");
    tail_ = std::make_unique<Loader>(path, "tail");
    const auto meta = metadata();
    n_grads_ = std::stoi(meta.at("graphdesc.grads"));
    attn_ = std::stoll(meta.at("graphdesc.attn"));
    chunk_elements_ = std::stoll(meta.at("graphdesc.chunk_elements"));
    if (meta.count("graphdesc.attention")) attention_ = meta.at("graphdesc.attention");
    if (attention_ != "blocks") {
      ng_ = std::stoll(meta.at("graphdesc.ng"));
      bucket_growth_ = std::stod(meta.at("graphdesc.bucket_growth"));
      std::stringstream names(meta.at("graphdesc.parts"));
      for (std::string name; std::getline(names, name, ',');) part_names_.push_back(name);
    }
    if (const char *env = std::getenv("GRAPHDESC_CHUNK_ELEMENTS")) {  // a user's override, as in Python
      const std::string text(env);
      if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos)
        throw std::invalid_argument("GRAPHDESC_CHUNK_ELEMENTS must be an integer >= 0 (floats per block-stage "
                                    "chunk, 0 = one chunk), got '" + text + "'");
      chunk_elements_ = std::stoll(text);
    }
  }

  // The package's metadata (graphdesc.schema, graphdesc.dtype, graphdesc.device, graphdesc.config, ...).
  std::unordered_map<std::string, std::string> metadata() const {
    return (model_ ? model_ : edges_)->get_metadata();
  }

  int schema() const {
    const auto meta = metadata();
    return meta.count("graphdesc.schema") ? std::stoi(meta.at("graphdesc.schema")) : 0;
  }

  // Centers per call of the block program: its largest temporary, (rows, width, max(width, attn)),
  // holds about chunk_elements floats; chunk_elements 0 (accelerators) means all centers at once.
  int64_t chunk_rows(int64_t num_local, int64_t width) const {
    if (chunk_elements_ <= 0) return std::max<int64_t>(num_local, 1);
    return std::max<int64_t>(1, chunk_elements_ / (width * std::max(width, attn_)));
  }

  // Ragged parts (attention "pairs"/"buckets"): centers per chunk, from each center row's edge-row count
  // (graphdesc.descriptor.ragged.ragged_cuts, the same rule).
  std::vector<int64_t> ragged_cuts(const torch::Tensor &slots_tensor) const {
    const auto slots_cpu = slots_tensor.to(torch::kCPU, torch::kLong).contiguous();
    const int64_t *slots = slots_cpu.data_ptr<int64_t>();
    const int64_t n = slots_cpu.numel();
    if (chunk_elements_ <= 0 || n == 0) return {n};
    std::vector<int64_t> sizes;
    if (attention_ == "pairs") {  // a center costs slots * max(slots * attn, 4 ng); cut at each budget multiple
      int64_t before = 0, piece = -1;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t id = before / chunk_elements_;
        if (id != piece) sizes.push_back(0), piece = id;
        ++sizes.back();
        before += slots[i] * std::max(slots[i] * attn_, 4 * ng_);
      }
      return sizes;
    }
    // buckets: slots ascend; a piece of c centers costs c * w * max(w, attn), w = max(its last slots, 2),
    // and ends before a width over bucket_growth times its first
    for (int64_t start = 0; start < n;) {
      const double widest = bucket_growth_ * std::max<int64_t>(slots[start], 2);
      int64_t stop = start + 1;
      while (stop < n) {
        const int64_t w = std::max<int64_t>(slots[stop], 2);
        if (w > widest || (stop + 1 - start) * w * std::max(w, attn_) > chunk_elements_) break;
        ++stop;
      }
      sizes.push_back(stop - start);
      start = stop;
    }
    return sizes;
  }

  // The schema's outputs for its inputs (made contiguous: the programs read the strides they were traced with).
  std::vector<torch::Tensor> run(std::vector<torch::Tensor> inputs) {
    for (auto &t : inputs) t = t.contiguous();
    if (model_) return model_->run(inputs);
    auto parts = edges_->run(inputs);
    const int64_t num_local = inputs[0].size(0);
    auto atom_energy = torch::empty({num_local}, parts[0].options());
    std::vector<torch::Tensor> inputs_tail = inputs;
    inputs_tail.push_back(atom_energy);
    for (int k = 0; k < n_grads_; ++k) inputs_tail.push_back(torch::empty(parts[k].sizes(), parts[k].options()));
    // chunk boundaries: centers[i]..centers[i+1], and per part whether it holds edge rows
    std::vector<int64_t> centers{0}, edge_rows{0};
    std::vector<bool> is_edge(parts.size(), false);
    if (attention_ == "blocks") {
      const int64_t rows = chunk_rows(num_local, parts[0].size(1));
      for (int64_t start = rows; start < num_local; start += rows) centers.push_back(start);
      centers.push_back(num_local);
      edge_rows = centers;
    } else {
      const auto index = [this](const std::string &name) {
        return std::find(part_names_.begin(), part_names_.end(), name) - part_names_.begin();
      };
      const auto slots = parts[index("slots")].to(torch::kCPU, torch::kLong).contiguous();
      const auto offsets = slots.cumsum(0);
      for (const int64_t size : ragged_cuts(slots)) {
        centers.push_back(centers.back() + size);
        edge_rows.push_back(centers.back() ? offsets[centers.back() - 1].item<int64_t>() : 0);
      }
      for (size_t k = 0; k < parts.size(); ++k)
        // "g": the embedded rows, the first part of packages exported before the embedding moved into the block
        for (const char *edge_key : {"x", "rows", "sw", "u", "valid", "edge", "g"})
          if (part_names_[k] == edge_key) is_edge[k] = true;
      for (const char *key : {"edge", "center"}) inputs_tail.push_back(parts[index(key)]);
    }
    for (size_t i = 0; i + 1 < centers.size(); ++i) {
      std::vector<std::pair<int64_t, int64_t>> bounds;
      std::vector<torch::Tensor> piece;
      for (size_t k = 0; k < parts.size(); ++k) {
        bounds.emplace_back(is_edge[k] ? std::make_pair(edge_rows[i], edge_rows[i + 1])
                                       : std::make_pair(centers[i], centers[i + 1]));
        piece.push_back(parts[k].slice(0, bounds[k].first, bounds[k].second).contiguous());
      }
      const auto out = block_->run(piece);  // atom energies of the chunk, then d energy / d part
      atom_energy.slice(0, centers[i], centers[i + 1]).copy_(out[0]);
      for (int k = 0; k < n_grads_; ++k)
        inputs_tail[inputs.size() + 1 + k].slice(0, bounds[k].first, bounds[k].second).copy_(out[k + 1]);
    }
    parts.clear();  // the tail needs none of the blocks
    return tail_->run(inputs_tail);
  }

 private:
  std::unique_ptr<Loader> model_, edges_, block_, tail_;
  int n_grads_ = 0;
  int64_t attn_ = 0, chunk_elements_ = 0, ng_ = 0;
  double bucket_growth_ = 1.0;
  std::string attention_ = "blocks";
  std::vector<std::string> part_names_;
};

}  // namespace graphdesc
