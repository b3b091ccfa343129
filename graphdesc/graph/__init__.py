"""NeighborGraph: the container, its validation, builders, layouts and force/virial assembly."""

from .build import MAX_EDGES, MIN_DISTANCE, batch_graphs, build_graph, check_min_distance
from .container import NeighborGraph, num_nodes
from .forces import edge_force_virial
from .halo import HaloGraph, batch_halos, fold_ghosts, halo_graph
from .layout import from_dense_quartet, to_dense, to_quartet, to_static, truncate
from .validate import frame_first_node, node_frame, validate

__all__ = [
    "NeighborGraph",
    "build_graph",
    "batch_graphs",
    "check_min_distance",
    "MIN_DISTANCE",
    "MAX_EDGES",
    "validate",
    "node_frame",
    "frame_first_node",
    "num_nodes",
    "truncate",
    "to_static",
    "to_dense",
    "from_dense_quartet",
    "to_quartet",
    "edge_force_virial",
    "HaloGraph",
    "halo_graph",
    "batch_halos",
    "fold_ghosts",
]
