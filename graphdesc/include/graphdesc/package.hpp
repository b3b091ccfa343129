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
// GRAPHDESC_CHUNK_ELEMENTS (floats in a chunk's largest temporary; 0 = one chunk)
// overrides the package's chunk size, as for the Python loader.
//
// Header-only; needs libtorch (torch/csrc/inductor/aoti_package). Part of
// graphdesc: find its folder with python -c "import graphdesc.export as e; print(e.include_dir())".

#pragma once

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace graphdesc {

class Package {
 public:
  using Loader = torch::inductor::AOTIModelPackageLoader;

  explicit Package(const std::string &path) {
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

  // The schema's outputs for its inputs (made contiguous: the programs read the strides they were traced with).
  std::vector<torch::Tensor> run(std::vector<torch::Tensor> inputs) {
    for (auto &t : inputs) t = t.contiguous();
    if (model_) return model_->run(inputs);
    auto parts = edges_->run(inputs);
    const int64_t num_local = inputs[0].size(0), width = parts[0].size(1);
    auto atom_energy = torch::empty({num_local}, parts[0].options());
    std::vector<torch::Tensor> inputs_tail = inputs;
    inputs_tail.push_back(atom_energy);
    for (int k = 0; k < n_grads_; ++k) inputs_tail.push_back(torch::empty(parts[k].sizes(), parts[k].options()));
    const int64_t rows = chunk_rows(num_local, width);
    for (int64_t start = 0; start < num_local; start += rows) {
      const int64_t stop = std::min(num_local, start + rows);
      std::vector<torch::Tensor> piece;
      for (const auto &p : parts) piece.push_back(p.slice(0, start, stop).contiguous());
      const auto out = block_->run(piece);  // atom energies of the chunk, then d energy / d part
      for (int k = 0; k <= n_grads_; ++k) inputs_tail[inputs.size() + k].slice(0, start, stop).copy_(out[k]);
    }
    parts.clear();  // the tail needs none of the blocks
    return tail_->run(inputs_tail);
  }

 private:
  std::unique_ptr<Loader> model_, edges_, block_, tail_;
  int n_grads_ = 0;
  int64_t attn_ = 0, chunk_elements_ = 0;
};

}  // namespace graphdesc
