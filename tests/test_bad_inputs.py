"""The bad-input matrix: public entry points (Python API and CLI) x bad inputs.

Every case asserts the exception type and that the message names the
argument (or the file) at fault. CLI cases run twice: with
``GRAPHDESC_TRACEBACK=1`` (the exception propagates, so its type is checked)
and as a user runs them (one ``graphdesc VERB: error: ...`` line on stderr,
exit status 1, the same message).

``docs/errors.md`` is this matrix as a table of what the user sees; it is
generated from the cases, and ``test_errors_doc_is_current`` fails when it
is stale. Regenerate it with::

    python -m pytest tests/test_bad_inputs.py --write-errors-doc
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from graphdesc import center_edge_pairs, segment_softmax, segment_sum
from graphdesc.cli import main
from graphdesc.descriptor import dpa1_graph, load_deepmd
from graphdesc.graph import build_graph

torch = pytest.importorskip("torch")
from graphdesc.ase import Calculator  # noqa: E402
from graphdesc.export import load_package  # noqa: E402
from graphdesc.safe_io import UnsafeFileError  # noqa: E402
from graphdesc.torch import EnergyModel  # noqa: E402
from graphdesc.train import Dataset  # noqa: E402
from graphdesc.train.deepmd_data import read_systems  # noqa: E402
from graphdesc.train.deepmd_input import read_input  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


@dataclass(frozen=True)
class Case:
    """One bad input at one entry point.

    ``call(ctx)`` performs the call (for ``cli`` cases it returns the argv);
    ``error`` is the exception type; ``names`` a regex the message must match,
    naming the argument or file (``{tmp}`` stands for the case folder).
    """

    entry: str
    bad: str
    call: object
    error: type
    names: str

    @property
    def id(self) -> str:
        return f"{self.entry} | {self.bad}"


class Ctx:
    """What the cases call into: a float64 model, its package, and files made on demand in ``tmp``."""

    def __init__(self, tmp: Path, model, ckpt: Path, package):
        self.tmp, self.model, self.ckpt, self.package = tmp, model, ckpt, package

    # -- structures --------------------------------------------------------------------------------------
    def graph(self, n=6, dtype=torch.float64, seed=0):
        rng = np.random.default_rng(seed)
        pos = torch.as_tensor(rng.uniform(0, 4.0, (n, 3)), dtype=dtype)
        return build_graph(pos, 4.0, cell=torch.eye(3, dtype=dtype) * 4.0, pbc=True), torch.arange(n) % 2

    def package_inputs(self, **change):
        graph, atype = self.graph()
        inputs = {"atype": atype, "edge_index": graph.edge_index, "edge_vec": graph.edge_vec,
                  "edge_mask": graph.edge_mask, "n_node": graph.n_node}
        return self.package(**{**inputs, **change})

    def model_call(self, graph=None, atype=None):
        g, a = self.graph()
        return self.model(g if graph is None else graph, a if atype is None else atype)

    def atoms(self, symbols="Cu4", move=None, **kw):
        from ase.build import bulk

        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.set_chemical_symbols(list(re.findall(r"[A-Z][a-z]?", symbols * 4))[:4] if symbols != "Cu4"
                                   else ["Cu"] * 4)
        if move is not None:
            atoms.positions[move[0]] = move[1](atoms.positions)
        for k, v in kw.items():
            setattr(atoms, k, v)
        atoms.info["energy"] = -10.0
        return atoms

    def energy(self, atoms):
        atoms.calc = Calculator(self.model, type_map=["Cu", "Al"])
        return atoms.get_potential_energy()

    # -- files -------------------------------------------------------------------------------------------
    def file(self, name: str, data) -> str:
        path = self.tmp / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return str(path)

    def npz(self, name, **arrays) -> str:
        path = self.tmp / name
        np.savez(path, **arrays)
        return str(path)

    def extxyz(self, name, *images) -> str:
        from ase.io import write

        path = self.tmp / name
        write(path, list(images), format="extxyz")
        return str(path)

    def system(self, name, drop=None, **arrays) -> str:
        """A two-atom DeePMD-kit system with one frame; ``arrays`` replace its .npy files."""
        root = self.tmp / name
        (root / "set.000").mkdir(parents=True)
        (root / "type.raw").write_text("0\n0\n")
        (root / "type_map.raw").write_text("Cu\n")
        files = {"coord": np.array([[0.0, 0, 0, 1.5, 1.5, 0]]), "box": (np.eye(3) * 5.0).reshape(1, 9),
                 "energy": np.array([-1.0]), **arrays}
        for key, value in files.items():
            if f"{key}.npy" != drop:
                np.save(root / "set.000" / f"{key}.npy", value)
        return str(root)

    def deepmd_input(self, name, **descriptor) -> str:
        data = {"model": {"type_map": ["Cu"], "descriptor": {"type": "se_atten", **descriptor}, "fitting_net": {}},
                "learning_rate": {"type": "exp", "start_lr": 1e-3},
                "training": {"training_data": {"systems": [self.system(f"{name}-sys")]}, "numb_steps": 10}}
        return self.file(name, json.dumps(data))

    def ckpt_with(self, name, change) -> str:
        with np.load(self.ckpt) as f:
            arrays = dict(f)
        change(arrays)
        return self.npz(name, **arrays)


def _evil_pickle(marker):
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    return pickle.dumps({"model": Payload()})


def _half(path) -> bytes:
    data = Path(path).read_bytes()
    return data[: len(data) // 2]


def _zip(path) -> bytes:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "not a package")
    return Path(path).read_bytes()


NAN = float("nan")
TOO_CLOSE = (1, lambda p: p[0] + [0.02, 0.0, 0.0])
COINCIDENT = (1, lambda p: p[0])


def _set(arrays, key, value):
    arrays[key] = value


CASES = [
    # -- array-API core ---------------------------------------------------------------------------------
    Case("segment_sum", "float segment ids", lambda c: segment_sum(np.ones(3), np.array([0.0, 1.0, 1.0]), 2),
         TypeError, "segment_ids"),
    Case("segment_sum", "out-of-range segment id",
         lambda c: segment_sum(np.ones(3), np.array([0, 1, 7]), 2), ValueError, r"segment_ids out of range"),
    Case("segment_sum", "ids shorter than data", lambda c: segment_sum(np.ones(3), np.array([0, 1]), 2),
         ValueError, "segment_ids"),
    Case("segment_sum", "negative num_segments", lambda c: segment_sum(np.ones(2), np.array([0, 1]), -1),
         ValueError, "num_segments"),
    Case("segment_softmax", "integer mask",
         lambda c: segment_softmax(np.ones(3), np.array([0, 0, 1]), 2, mask=np.array([1, 0, 1])),
         TypeError, "mask"),
    Case("center_edge_pairs", "out-of-range dst",
         lambda c: center_edge_pairs(np.array([0, 5]), np.array([True, True]), 2), ValueError, "dst"),
    Case("center_edge_pairs", "float edge_mask",
         lambda c: center_edge_pairs(np.array([0, 1]), np.array([1.0, 1.0]), 2), TypeError, "edge_mask"),
    # -- building graphs --------------------------------------------------------------------------------
    Case("build_graph", "NaN position", lambda c: build_graph(np.array([[0.0, 0, 0], [NAN, 1, 1]]), 4.0),
         ValueError, r"positions holds NaN or inf \(atom 1\)"),
    Case("build_graph", "inf position", lambda c: build_graph(np.array([[0.0, 0, 0], [1, np.inf, 1]]), 4.0),
         ValueError, r"positions holds NaN or inf \(atom 1\)"),
    Case("build_graph", "positions of shape (N, 2)", lambda c: build_graph(np.zeros((3, 2)), 4.0),
         ValueError, r"positions must have shape \(N, 3\)"),
    Case("build_graph", "integer positions", lambda c: build_graph(np.zeros((3, 3), dtype=np.int64), 4.0),
         TypeError, "positions must have a real floating dtype"),
    Case("build_graph", "negative cutoff", lambda c: build_graph(np.zeros((1, 3)), -1.0), ValueError, "cutoff"),
    Case("build_graph", "cell of shape (3,)", lambda c: build_graph(np.zeros((1, 3)), 4.0, cell=np.ones(3), pbc=True),
         ValueError, r"cell must have shape \(3, 3\)"),
    Case("build_graph", "NaN in the cell",
         lambda c: build_graph(np.zeros((1, 3)), 4.0, cell=np.diag([5.0, NAN, 5.0]), pbc=True), ValueError, "cell"),
    Case("build_graph", "pbc without a cell", lambda c: build_graph(np.zeros((1, 3)), 4.0, pbc=True),
         ValueError, "no cell was given"),
    Case("build_graph", "zero-volume periodic cell",
         lambda c: build_graph(np.zeros((1, 3)), 4.0, cell=np.diag([5.0, 5.0, 0.0]), pbc=True),
         ValueError, "cell is degenerate"),
    Case("build_graph", "coincident atoms", lambda c: build_graph(np.array([[1.0, 1, 1], [1.0, 1, 1]]), 4.0),
         ValueError, r"positions: atoms 0 and 1 coincide \(distance 0\)"),
    Case("build_graph", "atoms 0.02 A apart", lambda c: build_graph(np.array([[1.0, 1, 1], [1.02, 1, 1]]), 4.0),
         ValueError, r"positions: atoms 0 and 1 are 0\.02 A apart"),
    Case("build_graph", "nearly flat periodic cell",
         lambda c: build_graph(np.zeros((2, 3)) + [[0, 0, 0], [1, 1, 0]], 4.0,
                               cell=np.array([[5.0, 0, 0], [0, 5, 0], [5, 5, 1e-5]]), pbc=True),
         ValueError, r"pairs within the cutoff .* max_edges"),
    Case("build_graph", "pbc of four bools", lambda c: build_graph(np.zeros((1, 3)), 4.0, pbc=[True] * 4),
         ValueError, "pbc"),
    # -- the descriptor and the model -------------------------------------------------------------------
    Case("dpa1_graph", "atype of shape (N, 1)",
         lambda c: dpa1_graph(c.model.params()["descriptor"], c.model.config.descriptor, c.graph()[0],
                              c.graph()[1][:, None]), TypeError, "atype must be a 1-D integer array"),
    Case("EnergyModel", "float atype", lambda c: c.model_call(atype=torch.zeros(6)), TypeError, "atype"),
    Case("EnergyModel", "unknown type (5 of 2)", lambda c: c.model_call(atype=torch.full((6,), 5)),
         ValueError, "atype must be < ntypes = 2"),
    Case("EnergyModel", "negative type", lambda c: c.model_call(atype=torch.full((6,), -1)),
         ValueError, "atype must be >= 0"),
    Case("EnergyModel", "atype longer than the graph", lambda c: c.model_call(atype=torch.zeros(7, dtype=torch.int64)),
         ValueError, "atype has 7 entries but the graph has"),
    Case("EnergyModel", "float32 graph, float64 model",
         lambda c: c.model_call(graph=c.graph(dtype=torch.float32)[0]), TypeError, "edge_vec has dtype torch.float32"),
    Case("EnergyModel", "numpy graph", lambda c: c.model_call(graph=build_graph(np.random.rand(4, 3) * 3, 4.0),
                                                              atype=torch.zeros(4, dtype=torch.int64)),
         TypeError, "edge_index must be a torch.Tensor"),
    Case("EnergyModel", "not a graph", lambda c: c.model_call(graph=("edges",)), TypeError,
         "graph must be a NeighborGraph"),
    Case("EnergyModel", "out-of-range edge_index",
         lambda c: c.model_call(graph=c.graph()[0].replace(edge_index=c.graph()[0].edge_index.clamp(max=9) + 3)),
         ValueError, "edge_index out of range"),
    Case("EnergyModel", "NaN edge_vec",
         lambda c: c.model_call(graph=c.graph()[0].replace(edge_vec=c.graph()[0].edge_vec * NAN)),
         ValueError, "edge_vec holds NaN or inf on real edge 0"),
    Case("EnergyModel", "zero-length real edge",
         lambda c: c.model_call(graph=c.graph()[0].replace(edge_vec=c.graph()[0].edge_vec * 0)),
         ValueError, "edge_vec is zero on real edge 0"),
    Case("EnergyModel", "edge_mask of ints",
         lambda c: c.model_call(graph=c.graph()[0].replace(edge_mask=c.graph()[0].edge_mask.long())),
         TypeError, "edge_mask must have dtype bool"),
    Case("EnergyModel", "one atom in a 0.25 A cube (17k neighbors)",
         lambda c: c.model(build_graph(torch.zeros((1, 3), dtype=torch.float64), 4.0,
                                       cell=torch.eye(3, dtype=torch.float64) * 0.25, pbc=True),
                           torch.zeros(1, dtype=torch.int64)),
         ValueError, r"center 0 has \d+ neighbors within rcut"),
    # -- checkpoints --------------------------------------------------------------------------------------
    Case("EnergyModel.load", "missing file", lambda c: EnergyModel.load(c.tmp / "nope.npz"),
         FileNotFoundError, "nope.npz"),
    Case("EnergyModel.load", "text file", lambda c: EnergyModel.load(c.file("junk.npz", "hello")),
         ValueError, r"junk.npz is not a graphdesc model checkpoint"),
    Case("EnergyModel.load", "truncated checkpoint", lambda c: EnergyModel.load(c.file("cut.npz", _half(c.ckpt))),
         ValueError, r"cut.npz is not a graphdesc model checkpoint.*truncated"),
    Case("EnergyModel.load", "npz without header", lambda c: EnergyModel.load(c.npz("plain.npz", a=np.ones(2))),
         ValueError, r"plain.npz is an .npz archive but not a graphdesc model checkpoint"),
    Case("EnergyModel.load", "object array inside",
         lambda c: EnergyModel.load(c.ckpt_with("obj.npz", lambda a: _set(a, "fitting.bias_atom_e",
                                                                            np.array([{"x": 1}], dtype=object)))),
         ValueError, r"obj.npz: corrupt model checkpoint"),
    Case("EnergyModel.load", "parameter of the wrong shape",
         lambda c: EnergyModel.load(c.ckpt_with("shape.npz", lambda a: _set(a, "fitting.bias_atom_e", np.ones(5)))),
         ValueError, r"shape.npz: parameter 'fitting.bias_atom_e' has shape \(5,\)"),
    Case("EnergyModel.load", "parameter missing",
         lambda c: EnergyModel.load(c.ckpt_with("missing.npz", lambda a: a.pop("descriptor.davg"))),
         ValueError, r"missing.npz: the checkpoint's parameters do not match its config: "
                     r"missing \['descriptor.davg'\]"),
    # -- DeePMD-kit model files ---------------------------------------------------------------------------
    Case("EnergyModel.from_deepmd", "malicious pickle (os.system)",
         lambda c: EnergyModel.from_deepmd(c.file("evil.pkl", _evil_pickle(c.tmp / "pwned"))),
         UnsafeFileError, r"evil.pkl: refused to load: the pickle asks for the Python global '\w+\.system'"),
    Case("load_deepmd", "truncated pickle",
         lambda c: load_deepmd(c.file("cut.pkl", pickle.dumps({"model": list(range(100))})[:50])),
         ValueError, r"cut.pkl: cannot read the pickle \(truncated\)"),
    Case("load_deepmd", "pickle of a list", lambda c: load_deepmd(c.file("list.pkl", pickle.dumps([1, 2]))),
         ValueError, "list.pkl holds a list, not a DeePMD-kit model dict"),
    Case("load_deepmd", "dict without a descriptor", lambda c: load_deepmd(c.file("empty.pkl", pickle.dumps({}))),
         ValueError, "empty.pkl: no DeePMD-kit descriptor dict found"),
    Case("load_deepmd", "broken JSON", lambda c: load_deepmd(c.file("m.json", '{"model": ')), ValueError,
         r"m.json: not valid JSON"),
    Case("load_deepmd", "YAML with a Python tag",
         lambda c: load_deepmd(c.file("m.yaml", "model: !!python/object/apply:os.system ['true']")),
         UnsafeFileError, r"m.yaml: refused to load"),
    Case("load_deepmd", "text file named .dp", lambda c: load_deepmd(c.file("m.dp", "plain text")),
         ValueError, r"m.dp: not a readable HDF5 \(.dp\) file"),
    Case("load_deepmd", "unknown suffix", lambda c: load_deepmd(c.file("m.txt", "{}")), ValueError,
         r"m.txt: unknown model file type '.txt'"),
    Case("load_deepmd", "missing file", lambda c: load_deepmd(c.tmp / "nope.pkl"), FileNotFoundError, "nope.pkl"),
    # -- .pt2 packages --------------------------------------------------------------------------------------
    Case("load_package", "missing file", lambda c: load_package(c.tmp / "nope.pt2"), FileNotFoundError, "nope.pt2"),
    Case("load_package", "text file", lambda c: load_package(c.file("junk.pt2", "hello")), ValueError,
         r"junk.pt2 is not a .pt2 package"),
    Case("load_package", "truncated package", lambda c: load_package(c.file("cut.pt2", _half(c.package.path))),
         ValueError, r"cut.pt2 is not a .pt2 package.*truncated"),
    Case("load_package", "zip that is no package", lambda c: load_package(c.file("zip.pt2", _zip(c.tmp / "z.zip"))),
         ValueError, r"zip.pt2 is not a loadable AOTInductor .pt2 package"),
    Case("package call", "float32 edge_vec", lambda c: c.package_inputs(edge_vec=c.graph()[0].edge_vec.float()),
         TypeError, "edge_vec must be torch.float64"),
    Case("package call", "int32 atype", lambda c: c.package_inputs(atype=c.graph()[1].int()), TypeError,
         "atype must be int64"),
    Case("package call", "numpy edge_index", lambda c: c.package_inputs(edge_index=c.graph()[0].edge_index.numpy()),
         TypeError, "edge_index must be a torch.Tensor"),
    Case("package call", "unknown type", lambda c: c.package_inputs(atype=c.graph()[1] + 7), ValueError,
         "atype must be < ntypes"),
    Case("package call", "out-of-range edge_index",
         lambda c: c.package_inputs(edge_index=c.graph()[0].edge_index + 100), ValueError, "edge_index out of range"),
    Case("package call", "NaN edge_vec", lambda c: c.package_inputs(edge_vec=c.graph()[0].edge_vec * NAN),
         ValueError, "edge_vec holds NaN"),
    Case("package call", "a ghost as an edge's center",
         lambda c: c.package_inputs(atype=c.graph()[1][:4], n_node=torch.tensor([4]),
                                    ghost_atype=c.graph()[1][4:]),
         ValueError, r"has ghost node \d as its center \(dst\)"),
    Case("package call", "n_node not summing to the local atoms",
         lambda c: c.package_inputs(n_node=torch.tensor([5])), ValueError, "n_node sums to 5 but num_local is 6"),
    Case("package call", "int32 ghost_atype", lambda c: c.package_inputs(ghost_atype=torch.zeros(2, dtype=torch.int32)),
         TypeError, "ghost_atype must be int64"),
    # -- ASE calculator -------------------------------------------------------------------------------------
    Case("Calculator", "unknown element", lambda c: c.energy(c.atoms("CuNi")), ValueError,
         r"elements \['Ni'\] are not in the model's type_map"),
    Case("Calculator", "NaN position", lambda c: c.energy(c.atoms(move=(2, lambda p: [NAN, 0, 0]))), ValueError,
         r"positions holds NaN or inf \(atom 2\)"),
    Case("Calculator", "coincident atoms", lambda c: c.energy(c.atoms(move=COINCIDENT)), ValueError,
         "atoms 0 and 1 coincide"),
    Case("Calculator", "periodic cell of zero volume", lambda c: c.energy(c.atoms(cell=np.diag([3.6, 3.6, 0.0]))),
         ValueError, "cell is degenerate"),
    Case("Calculator", "type_map of the wrong length", lambda c: Calculator(c.model, type_map=["Cu"]),
         ValueError, "type_map has 1 entries but the model has 2 types"),
    Case("Calculator", "type_map entry not an element", lambda c: Calculator(c.model, type_map=["Cu", "Xx"]),
         ValueError, "type_map entry 'Xx' is not an element symbol"),
    Case("Calculator", "model of the wrong kind", lambda c: Calculator(42, type_map=["Cu", "Al"]), TypeError,
         "model_or_package_path must be"),
    # -- training data --------------------------------------------------------------------------------------
    Case("Dataset.from_atoms", "no frames", lambda c: Dataset.from_atoms([]), ValueError, "the dataset is empty"),
    Case("Dataset.from_atoms", "frame without atoms", lambda c: Dataset.from_atoms([c.atoms()[:0]],
                                                                                  type_map=["Cu"]),
         ValueError, "frame 0 has no atoms"),
    Case("Dataset.from_atoms", "NaN position", lambda c: Dataset.from_atoms([c.atoms(move=(1, lambda p: NAN))]),
         ValueError, "frame 0 has NaN or inf positions"),
    Case("Dataset.from_atoms", "atoms 0.02 A apart", lambda c: Dataset.from_atoms([c.atoms(move=TOO_CLOSE)]),
         ValueError, r"frame 0: atoms 0 and 1 are 0\.02 A apart"),
    Case("Dataset.from_atoms", "element outside type_map",
         lambda c: Dataset.from_atoms([c.atoms("CuAl")], type_map=["Cu"]), ValueError,
         r"frame 0 holds elements \['Al'\] that are not in type_map"),
    Case("Dataset.read", "missing file", lambda c: Dataset.read(c.tmp / "nope.extxyz"), FileNotFoundError,
         "nope.extxyz"),
    Case("Dataset.read", "empty file", lambda c: Dataset.read(c.file("empty.extxyz", "")), ValueError,
         r"cannot read dataset file '.*empty.extxyz'"),
    Case("Dataset.read", "corrupt file", lambda c: Dataset.read(c.file("bad.extxyz", "3\nxx\nCu 0 0\n")),
         ValueError, r"cannot read dataset file '.*bad.extxyz'"),
    Case("read_systems", "a set without energy.npy", lambda c: read_systems(c.system("noe", drop="energy.npy")),
         ValueError, r"noe/set.000 has no energy.npy"),
    Case("read_systems", "pickled object array", lambda c: read_systems(c.system("obj", coord=np.array([object()]))),
         ValueError, r"obj/set.000/coord.npy: not a plain numeric .npy array"),
    Case("read_systems", "coord.npy of the wrong width", lambda c: read_systems(c.system("w", coord=np.zeros((1, 4)))),
         ValueError, r"w/set.000/coord.npy has shape \(1, 4\), which does not fit 2 atoms"),
    Case("read_systems", "glob matching nothing", lambda c: read_systems(str(c.tmp / "none-*")), FileNotFoundError,
         "no DeePMD-kit system matches the pattern"),
    Case("read_input", "unknown key", lambda c: read_input(c.deepmd_input("u.json", foo=1)), ValueError,
         r"u.json: model.descriptor.foo is not supported by graphdesc"),
    Case("read_input", "key at a value graphdesc does not implement",
         lambda c: read_input(c.deepmd_input("t.json", trainable=False)), ValueError,
         r"t.json: model.descriptor.trainable = False is not supported by graphdesc \(it implements True only\)"),
    # -- command line -----------------------------------------------------------------------------------
    Case("cli export", "missing model", lambda c: ["export", str(c.tmp / "nope.npz"), "-o", str(c.tmp / "o.pt2")],
         FileNotFoundError, "nope.npz"),
    Case("cli export", "malicious pickle",
         lambda c: ["export", c.file("evil.pkl", _evil_pickle(c.tmp / "pwned")), "-o", str(c.tmp / "o.pt2")],
         UnsafeFileError, r"evil.pkl: refused to load"),
    Case("cli eval", "corrupt package", lambda c: ["eval", c.file("junk.pt2", "x"), "s.xyz"], ValueError,
         r"junk.pt2 is not a .pt2 package"),
    Case("cli eval", "structure with coincident atoms",
         lambda c: ["eval", str(c.ckpt), c.extxyz("close.extxyz", c.atoms(move=COINCIDENT)), "--type-map", "Cu,Al"],
         ValueError, r"close.extxyz, frame 0: positions: atoms 0 and 1 coincide"),
    Case("cli eval", "corrupt structure file", lambda c: ["eval", str(c.ckpt), c.file("s.xyz", "2\n\nCu 0 0 0\n"),
                                                                "--type-map", "Cu,Al"],
         ValueError, r"cannot read structure file '.*s.xyz'"),
    Case("cli eval", "missing structure file", lambda c: ["eval", str(c.ckpt), str(c.tmp / "nope.xyz"),
                                                                 "--type-map", "Cu,Al"],
         FileNotFoundError, "no such structure file: .*nope.xyz"),
    Case("cli eval", "unknown element",
         lambda c: ["eval", str(c.ckpt), c.extxyz("ni.extxyz", c.atoms("CuNi")), "--type-map", "Cu,Al"],
         ValueError, r"elements \['Ni'\] are not in the model's type_map"),
    Case("cli train", "corrupt dataset", lambda c: ["train", c.file("bad.extxyz", "3\nxx\n"), "-o", str(c.tmp / "r")],
         ValueError, r"cannot read dataset file '.*bad.extxyz'"),
    Case("cli train", "dataset with coincident atoms",
         lambda c: ["train", c.extxyz("close.extxyz", c.atoms(), c.atoms(move=COINCIDENT)), "-o", str(c.tmp / "r")],
         ValueError, "frame 1: atoms 0 and 1 coincide"),
    Case("cli train", "truncated --init-model",
         lambda c: ["train", "--demo", "--demo-frames", "4", "--init-model", c.file("cut.npz", _half(c.ckpt)),
                    "-o", str(c.tmp / "r"), "--no-progress"],
         ValueError, r"cut.npz is not a graphdesc model checkpoint"),
    Case("cli train", "--restart from a model without a training state",
         lambda c: ["train", "--demo", "--demo-frames", "4", "--restart", c.file("m.npz", Path(c.ckpt).read_bytes()),
                    "-o", str(c.tmp / "r"), "--no-progress"],
         ValueError, r"m\.npz is a model checkpoint without a training state"),
    Case("cli train", "--nproc 0", lambda c: ["train", "--demo", "--nproc", "0"], ValueError,
         "--nproc must be >= 1, got 0"),
    Case("cli train", "input.json with a flag it sets",
         lambda c: ["train", c.deepmd_input("i.json"), "--steps", "5", "-o", str(c.tmp / "r")], ValueError,
         r"i.json sets the run; the flags \['--steps'\] cannot change it"),
    Case("cli doctor", "corrupt model", lambda c: ["doctor", c.file("m.json", "[1, 2"), "--modes", "eager"],
         ValueError, r"m.json: not valid JSON"),
]


@pytest.fixture(scope="module")
def ctx_base(model64, package64):
    return model64, package64


def _ctx(ctx_base, tmp_path):
    (model, ckpt), package = ctx_base
    return Ctx(tmp_path, model, ckpt, package)


def run_case(case: Case, ctx: Ctx, capsys=None) -> str:
    """Run ``case``; assert the type and the named argument; return the message (``{tmp}/`` removed)."""
    if case.entry.startswith("cli"):
        argv = case.call(ctx)
        os.environ["GRAPHDESC_TRACEBACK"] = "1"
        try:
            with pytest.raises(case.error) as info:
                main(argv)
        finally:
            del os.environ["GRAPHDESC_TRACEBACK"]
        if capsys is not None:  # as a user sees it: one line, exit status 1
            capsys.readouterr()
            assert main(argv) == 1
            err = capsys.readouterr().err
            assert err == f"graphdesc {argv[0]}: error: {info.value}\n"
    else:
        with pytest.raises(case.error) as info:
            case.call(ctx)
    message = str(info.value)
    assert type(info.value) is case.error or case.error is ValueError and isinstance(info.value, ValueError)
    assert re.search(case.names, message), f"{case.id}: {message!r} does not name {case.names!r}"
    assert "allow_pickle" not in message
    assert not (ctx.tmp / "pwned").exists()
    return message.replace(f"{ctx.tmp}/", "").replace(str(ctx.tmp), "")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, ctx_base, tmp_path, capsys):
    run_case(case, _ctx(ctx_base, tmp_path), capsys)


def test_cases_cover_the_issue_matrix():
    """The matrix spans every kind of bad input the issue names, at API and CLI entry points."""
    text = " ".join(c.bad.lower() for c in CASES)
    for kind in ("nan", "inf", "dtype|float|int", "shape", "type", "out-of-range", "unknown element|element outside",
                 "empty", "corrupt|truncated", "malicious"):
        assert re.search(kind, text), kind
    assert any(c.entry.startswith("cli") for c in CASES) and len({c.entry for c in CASES}) >= 15


def errors_table(messages) -> str:
    lines = ["# What graphdesc says to bad input", "",
             "Generated from `tests/test_bad_inputs.py` (one row per case; `python -m pytest "
             "tests/test_bad_inputs.py --write-errors-doc` regenerates it). Paths are shown without their folder.",
             "", f"{len(CASES)} cases.", "", "| entry point | bad input | error | message |", "|---|---|---|---|"]
    for case, message in zip(CASES, messages):
        text = message.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{case.entry}` | {case.bad} | `{case.error.__name__}` | {text} |")
    return "\n".join(lines) + "\n"


def test_errors_doc_is_current(ctx_base, tmp_path_factory, request):
    messages = [run_case(case, _ctx(ctx_base, tmp_path_factory.mktemp("case"))) for case in CASES]
    table = errors_table(messages)
    if request.config.getoption("--write-errors-doc"):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(table)
    assert DOC.exists() and DOC.read_text() == table, \
        "docs/errors.md is stale: python -m pytest tests/test_bad_inputs.py --write-errors-doc"
    guide = (DOC.parent / "safety.md").read_text()
    assert f"{len(CASES)} cases" in guide, "docs/safety.md's count of bad-input cases is stale"
