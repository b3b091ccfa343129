"""Training: data, batches, losses, schedule, the training loop, compiled training and the gradient doctor."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ase")
pytest.importorskip("tqdm")
from ase.build import bulk  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402

from graphdesc.cli import main  # noqa: E402
from graphdesc.descriptor import DPA1Config, compute_stats  # noqa: E402
from graphdesc.graph import build_graph  # noqa: E402
from graphdesc.model import EnergyConfig  # noqa: E402
from graphdesc.torch import EnergyModel  # noqa: E402
from graphdesc.train import (  # noqa: E402
    Dataset,
    ExpDecay,
    GraphCache,
    LossConfig,
    Metrics,
    TrainConfig,
    TrainingForward,
    emt_dataset,
    evaluate,
    fit_statistics,
    loss_terms,
    train,
)
from graphdesc.train.doctor import gradient_doctor, softmax_health  # noqa: E402

RCUT = 4.5


@pytest.fixture(scope="module")
def data():
    return emt_dataset(12, seed=3)


def small_model(type_map=("Al", "Cu"), seed=0, precision="float64") -> EnergyModel:
    config = EnergyConfig(DPA1Config(rcut=RCUT, rcut_smth=0.5, sel=48, ntypes=len(type_map), neuron=(4, 8, 16),
                                     axis_neuron=4, tebd_dim=4, attn=16, attn_layer=1, type_map=type_map,
                                     precision=precision), neuron=(16, 16, 16))
    return EnergyModel(config, seed=seed)


@pytest.fixture(scope="module")
def model(data):
    m = small_model()
    fit_statistics(m, data)
    return m


# -- data ---------------------------------------------------------------------------------------------------
def test_extxyz_round_trip(data, tmp_path):
    """Labels survive a write/read cycle to the resolution of ASE's extxyz arrays (8 decimals)."""
    path = tmp_path / "frames.extxyz"
    data.write(path)
    back = Dataset.read(path)
    assert back.type_map == ("Al", "Cu") and len(back) == len(data)
    for a, b in zip(data.frames, back.frames):
        np.testing.assert_array_equal(a.atype, b.atype)
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=5.1e-9)
        np.testing.assert_allclose(a.cell, b.cell, rtol=0, atol=1e-12)
        assert abs(a.energy - b.energy) < 1e-10
        np.testing.assert_allclose(a.forces, b.forces, rtol=0, atol=5.1e-9)
        np.testing.assert_allclose(a.virial, b.virial, rtol=1e-9, atol=1e-9)


def test_virial_label_is_minus_strain_derivative():
    """virial = -stress * V is -dE/d(strain): the sign graphdesc's models use (checked by finite differences)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    virial = Dataset.from_atoms([atoms]).frames[0].virial
    h = 1e-6
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                strained = atoms.copy()
                eps = np.eye(3)
                eps[a, b] += sign * h
                strained.set_cell(atoms.cell[:] @ eps, scale_atoms=True)
                strained.calc = EMT()
                energies.append(strained.get_potential_energy())
            fd[a, b] = -(energies[0] - energies[1]) / (2 * h)
    np.testing.assert_allclose(virial, (fd + fd.T) / 2, rtol=1e-6, atol=1e-7)


def test_labels_from_info_and_type_map_order(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.numbers[0] = 13
    atoms.info["energy"] = -1.5
    atoms.arrays["forces"] = np.ones((4, 3))
    frame = Dataset.from_atoms([atoms], type_map=["Cu", "Al"]).frames[0]
    assert frame.energy == -1.5 and frame.virial is None
    np.testing.assert_array_equal(frame.atype, [1, 0, 0, 0])
    np.testing.assert_array_equal(frame.forces, np.ones((4, 3)))


def test_bad_data_errors(tmp_path, data):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    with pytest.raises(ValueError, match="frame 0 has no energy"):
        Dataset.from_atoms([atoms])
    atoms.info["energy"] = 0.0
    with pytest.raises(ValueError, match=r"frame 0 holds elements \['Cu'\] that are not in type_map"):
        Dataset.from_atoms([atoms], type_map=["Al"])
    with pytest.raises(ValueError, match="empty"):
        Dataset.from_atoms([])
    with pytest.raises(ValueError, match="empty"):
        Dataset([], ["Cu"])
    with pytest.raises(ValueError, match="twice"):
        Dataset.from_atoms([atoms], type_map=["Cu", "Cu"])
    with pytest.raises(ValueError, match="not an element"):
        Dataset.from_atoms([atoms], type_map=["Qq"])
    atoms.positions[1, 0] = np.nan
    with pytest.raises(ValueError, match="frame 0 has NaN or inf positions"):
        Dataset.from_atoms([atoms])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Dataset.read(tmp_path / "missing.extxyz")
    (tmp_path / "empty.extxyz").write_text("")
    with pytest.raises(ValueError, match="empty.extxyz"):
        Dataset.read(tmp_path / "empty.extxyz")
    train_set, val_set = data.split(0.25, seed=1)
    assert len(train_set) + len(val_set) == len(data) and len(val_set) == 3
    assert {f.energy for f in train_set.frames}.isdisjoint({f.energy for f in val_set.frames})


def test_training_input_errors(data, model):
    no_forces = Dataset([f.__class__(**{**f.__dict__, "forces": None}) for f in data.frames], data.type_map)
    with pytest.raises(ValueError, match=r"force term .* frame 0 of 12 has no forces"):
        train(model, no_forces, config=TrainConfig(steps=1), progress=False)
    no_virial = Dataset([f.__class__(**{**f.__dict__, "virial": None}) for f in data.frames], data.type_map)
    with pytest.raises(ValueError, match="virial term .* has no virial"):
        train(model, no_virial, config=TrainConfig(steps=1, loss=LossConfig.only("virial")), progress=False)
    nickel = Dataset([f.__class__(**{**f.__dict__}) for f in data.frames[:1]], ("Ni", "Cu"))
    with pytest.raises(ValueError, match=r"elements \['Ni'\] that are not in the model's type_map"):
        train(model, nickel, config=TrainConfig(steps=1), progress=False)
    with pytest.raises(TypeError, match="train_set must be a graphdesc.train.Dataset"):
        train(model, data.frames, config=TrainConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="mode must be one of"):
        TrainConfig(mode="jit")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="stop_lr .* must not exceed start_lr"):
        TrainConfig(start_lr=1e-4, stop_lr=1e-3)
    with pytest.raises(ValueError, match="every loss prefactor is 0"):
        LossConfig(0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="start_pref_f must be a finite number"):
        LossConfig(start_pref_f=float("nan"))


# -- batches, losses, schedule, statistics --------------------------------------------------------------
def test_batch_matches_frames(data):
    cache = GraphCache(data, RCUT)
    batch = cache.batch([3, 0, 7])
    assert batch.graph.n_node.tolist() == [32, 32, 32]
    offset = 0
    for k in (3, 0, 7):
        f = data[k]
        g = build_graph(f.positions, RCUT, cell=f.cell, pbc=f.pbc)
        sel = (batch.graph.dst >= offset) & (batch.graph.dst < offset + 32)
        np.testing.assert_array_equal(batch.graph.edge_vec[sel].numpy(), g.edge_vec)
        np.testing.assert_array_equal(batch.graph.edge_index[:, sel].numpy() - offset, g.edge_index)
        np.testing.assert_array_equal(batch.force[offset:offset + 32].numpy(), f.forces)
        offset += 32
    np.testing.assert_array_equal(batch.energy.numpy(), [data[k].energy for k in (3, 0, 7)])


def test_loss_terms_and_metrics_match_numpy(data):
    cache = GraphCache(data, RCUT)
    batch = cache.batch([1, 2, 5])
    batch.virial_mask[1] = False  # frame 2 "has no virial": left out
    rng = np.random.default_rng(0)
    pred = {"energy": batch.energy + torch.as_tensor(rng.normal(0, 1, 3)),
            "force": batch.force + torch.as_tensor(rng.normal(0, 0.1, (96, 3))),
            "virial": batch.virial + torch.as_tensor(rng.normal(0, 1, (3, 3, 3)))}
    terms = loss_terms(pred, batch)
    de = (pred["energy"] - batch.energy).numpy() / 32
    dv = (pred["virial"] - batch.virial).numpy()[[0, 2]] / 32
    assert abs(float(terms["energy"]) - np.mean(de**2)) < 1e-15
    assert abs(float(terms["force"]) - np.mean((pred["force"] - batch.force).numpy() ** 2)) < 1e-15
    assert abs(float(terms["virial"]) - np.mean(dv**2)) < 1e-15
    metrics = Metrics()
    metrics.add(pred, batch)
    rmse = metrics.rmse()
    assert abs(rmse["energy"] - np.sqrt(np.mean(de**2))) < 1e-15
    assert abs(rmse["virial"] - np.sqrt(np.mean(dv**2))) < 1e-15
    prefs = LossConfig().prefactors(0.25)
    assert prefs == pytest.approx({"energy": 1 + (0.02 - 1) * 0.25, "force": 1 + 999 * 0.25, "virial": 0.0})
    # DeePMD-kit's default normalization (intensive_ener_virial false): squared errors over N, not N^2
    extensive = loss_terms(pred, batch, intensive=False)
    assert abs(float(extensive["energy"]) - np.mean(de**2 * 32)) < 1e-13
    assert abs(float(extensive["virial"]) - np.mean(dv**2 * 32)) < 1e-13
    assert float(extensive["force"]) == float(terms["force"])
    # a rank's share with the global counts: its terms are sums over the global number of entries
    share = loss_terms(pred, batch, counts={"energy": 6, "force": 2 * 288, "virial": 18})
    assert abs(float(share["energy"]) - np.sum(de**2) / 6) < 1e-15
    assert abs(float(share["force"]) - np.sum((pred["force"] - batch.force).numpy() ** 2) / 576) < 1e-15
    assert abs(float(share["virial"]) - np.sum(dv**2) / 18) < 1e-15


def test_exp_decay():
    s = ExpDecay(1e-3, 1e-5, num_steps=1000, decay_steps=10)
    assert s(0) == 1e-3 and s(9) == 1e-3 and s(10) < 1e-3
    assert abs(s(1000) - 1e-5) < 1e-15
    lrs = [s(k) for k in range(0, 1001, 10)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    with pytest.raises(ValueError, match="num_steps"):
        ExpDecay(num_steps=0)


def test_fit_statistics(data):
    m = small_model()
    energies = np.array([f.energy for f in data.frames])
    counts = np.stack([np.bincount(f.atype, minlength=2) for f in data.frames])
    fit_statistics(m, data)
    bias = m.fitting__bias_atom_e.numpy()
    # least squares: the residual is orthogonal to the count columns
    np.testing.assert_allclose(counts.T @ (energies - counts @ bias), 0, atol=1e-8)
    davg, dstd = compute_stats(m.config.descriptor, [(build_graph(f.positions, RCUT, cell=f.cell, pbc=f.pbc),
                                                      f.atype) for f in data.frames])
    np.testing.assert_array_equal(m.descriptor__davg.numpy(), davg)
    np.testing.assert_array_equal(m.descriptor__dstd.numpy(), dstd)


# -- eager gradients are right --------------------------------------------------------------------------
def test_force_loss_gradient_is_finite_difference(data, model):
    """The double-backward gradient of the force loss w.r.t. parameters, vs central differences (float64)."""
    batch = GraphCache(data, RCUT).batch([0, 1])
    m = model.train()
    forward = TrainingForward(m, "eager")

    def force_loss():
        return loss_terms(forward(batch.graph, batch.atype), batch, ("force",))["force"]

    checked = 0
    for name in ("descriptor__embedding__0__w", "descriptor__attention__0__in_w", "fitting__nets__0__0__w"):
        param = dict(m.named_parameters())[name]
        (grad,) = torch.autograd.grad(force_loss(), [param])
        idx = np.unravel_index(int(torch.argmax(grad.abs())), grad.shape)
        h = 1e-6
        with torch.no_grad():
            param[idx] += h
            up = float(force_loss())
            param[idx] -= 2 * h
            down = float(force_loss())
            param[idx] += h
        fd = (up - down) / (2 * h)
        assert abs(fd - float(grad[idx])) <= 1e-6 * max(1.0, abs(fd)), name
        checked += 1
    assert checked == 3


# -- compiled training and the doctor --------------------------------------------------------------------
@pytest.fixture(scope="module")
def doctor_report(data, model):
    cache = GraphCache(data, RCUT)
    batches = [cache.batch([0, 1]), cache.batch([2, 3, 4])]  # two batch sizes: no shape specialization
    return gradient_doctor(model, batches)


def test_compiled_gradients_equal_eager(doctor_report):
    """traced / aot_eager / inductor vs eager: every loss component alone and all together, two batch sizes."""
    r = doctor_report
    assert r.modes == ["eager", "traced", "aot_eager", "inductor"]
    assert not r.failed, "\n".join(r.failures())
    n = len(r.names)
    for (component, mode), cell in r.results.items():
        assert cell.error is None
        assert cell.max_abs <= 1e-10 and cell.loss_abs <= 1e-10, (component, mode, cell.max_abs)
        eager = r.results[(component, "eager")]
        assert cell.reached == eager.reached
    # what eager reaches: the energy loss everything; force and virial all but the output bias, which
    # shifts every atom's energy by the same constant (no force, no virial)
    assert len(r.results[("energy", "eager")].reached) == n
    assert r.results[("force", "eager")].reached == set(r.names) - {"fitting__nets__0__3__b"}
    assert r.results[("virial", "eager")].reached == set(r.names) - {"fitting__nets__0__3__b"}
    text = r.format()
    assert "inductor" in text and "LOST" not in text


def test_doctor_passes_on_the_pair_path(data, model):
    """Eager training through the pair path's own operators (pair_dot, pair_spread: derivatives written by
    hand, double backward included) gives the traced graph's gradients, whose pair products are plain ops
    differentiated by autograd, and inductor's, which compiles a trace of the operators (AOTAutograd
    differentiates them by their hand-written rules again): every loss component, 1e-10."""
    import copy

    pairs = copy.deepcopy(model)
    pairs.attention = "pairs"
    batch = GraphCache(data, RCUT).batch([0, 1, 2])
    report = gradient_doctor(pairs, [batch], modes=("eager", "traced", "inductor"))
    assert not report.failed, "\n".join(report.failures())
    for (component, mode), cell in report.results.items():
        assert cell.error is None and cell.max_abs <= 1e-10, (component, mode, cell.max_abs)
    assert len(report.results[("force", "eager")].reached) == len(report.names) - 1


def test_compiled_pair_trace_holds_no_pair_rows(data, model):
    """The compiled modes' trace of the pair path (its products as graphdesc's chunked operators) makes no
    tensor as big as the batch's gathered (P, attn) pair rows, in the forward with forces or in the loss's
    backward, so the compiler it goes to cannot hold them; the plain trace (mode traced) does make them,
    so the check can fail."""
    import copy

    from torch.utils._python_dispatch import TorchDispatchMode

    from graphdesc.train.compiled import trace_training_forward

    pairs = copy.deepcopy(model)
    pairs.attention = "pairs"
    batch = GraphCache(data, RCUT).batch([0, 1, 2])
    graph = batch.graph
    deg = torch.bincount(graph.dst[graph.edge_mask], minlength=len(batch.atype))
    pair_rows = int((deg ** 2).sum()) * pairs.config.descriptor.attn

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    Largest.numel = max(Largest.numel, t.numel())
            return out

    def largest(opaque_pairs):
        gm = trace_training_forward(pairs, opaque_pairs=opaque_pairs)
        nodes = sum("graphdesc.pair_" in str(n.target) for n in gm.graph.nodes)
        leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in pairs.leaves()]
        Largest.numel = 0
        with Largest():
            energy, force, _ = gm(leaves, batch.atype, graph.edge_index, graph.edge_vec, graph.edge_mask,
                                  graph.n_node)
            (energy.sum() + force.square().sum()).backward()
        return nodes, Largest.numel

    nodes, numel = largest(True)
    assert nodes > 0 and numel < pair_rows, (nodes, numel, pair_rows)
    nodes, numel = largest(False)
    assert nodes == 0 and numel >= pair_rows, (nodes, numel, pair_rows)


def test_doctor_catches_lost_gradients(data, model):
    """Negative control: the trace without the detach repair loses force and virial gradients."""
    batch = GraphCache(data, RCUT).batch([0, 1])
    report = gradient_doctor(model, [batch], modes=("eager", "traced"), keep_saved_detach=True)
    assert report.failed
    lost = report.results[("force", "traced")].lost
    assert lost and lost == report.results[("virial", "traced")].lost
    assert not report.results[("energy", "traced")].lost
    assert "LOST" in report.format()


def test_softmax_health():
    rows = softmax_health()
    assert len(rows) == 14 and all(r["ok"] for r in rows), rows
    assert all(r["max_dJ"] < 1e-14 for r in rows)

    def clamped(x, ids, n, mask, c, p):  # a softmax with a dead zone outside [-30, 30]
        from graphdesc.segment import segment_softmax

        return segment_softmax(torch.clamp(x, -30, 30), ids, n, mask=mask, phantom_count=c, phantom_logit=p)

    def naive(x, ids, n, mask, c, p):  # no max shift, no mask
        e = torch.exp(x)
        return e / torch.zeros(n, dtype=x.dtype).index_add(0, ids, e)[ids]

    bad = {(r["function"], r["regime"]): r for r in softmax_health({"clamped": clamped, "naive": naive})}
    assert bad[("clamped", "normal, scale 30")]["dead_zones"] > 0
    assert bad[("clamped", "normal, scale 1")]["ok"]
    assert all(bad[("naive", regime)]["nonfinite"] > 0 and bad[("naive", regime)]["leaks"] > 0
               for regime in ("equal logits", "exp range edge"))


def test_compiled_training_steps_equal_eager(data):
    """Three Adam steps in aot_eager mode give the parameters eager gives (float64, <= 1e-10)."""
    results = []
    for mode in ("eager", "aot_eager"):
        m = small_model()
        fit_statistics(m, data)
        config = TrainConfig(steps=3, batch_size=4, mode=mode, loss=LossConfig(1, 1, 10, 10, 1, 1))
        history = train(m, data, None, config, progress=False, log=lambda s: None)
        assert len(history.step_seconds) == 3
        results.append((m.state_dict(), history.rows[-1]["train_loss"]))
    (ref, loss_ref), (mine, loss) = results
    assert abs(loss - loss_ref) <= 1e-10 * max(1, abs(loss_ref))
    for key in ref:
        assert torch.allclose(ref[key], mine[key], rtol=0, atol=1e-10), key


def test_cli_doctor(tmp_path, capsys):
    path = tmp_path / "doctor.json"
    assert main(["doctor", "--modes", "eager,traced", "--batch-sizes", "1,2", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "OK: every mode matches eager" in out and "segment_softmax" in out
    assert json.loads(path.read_text())["gradients"]["failed"] is False
    assert main(["doctor", "--modes", "eager,traced", "--batch-sizes", "1", "--keep-saved-detach",
                 "--no-softmax-check"]) == 1
    assert "lost gradients of" in capsys.readouterr().err


# -- the demonstration ----------------------------------------------------------------------------------
def test_demo_training_lowers_force_rmse_and_exports(demo_run):
    """The README demo, shorter: validation force RMSE falls >= 3x; the trained model exports to a .pt2
    that reproduces it."""
    out, printed = demo_run
    rows = json.loads((out / "history.json").read_text())["rows"]
    first, last = rows[0]["val"]["force"], rows[-1]["val"]["force"]
    assert first / last >= 3, (first, last)
    assert "validation force RMSE" in printed
    for name in ("model.npz", "best.npz", "train.extxyz", "val.extxyz"):
        assert (out / name).exists()
    model = EnergyModel.load(out / "best.npz")
    val = Dataset.read(out / "val.extxyz")
    best = min(rows, key=lambda r: r["val_loss"])  # best.npz: the lowest validation loss
    assert abs(evaluate(model, val)["force"] - best["val"]["force"]) < 1e-12

    assert main(["eval", str(out / "model.pt2"), str(out / "val.extxyz"), "--json", str(out / "eval.json")]) == 0
    evaluated = json.loads((out / "eval.json").read_text())
    cache = GraphCache(val, model.config.rcut)
    for k, row in enumerate(evaluated):
        batch = cache.batch([k])
        ref = model.eval()(batch.graph, batch.atype)
        assert abs(row["energy"] - float(ref["energy"][0])) < 1e-9
        np.testing.assert_allclose(row["forces"], ref["force"].detach().numpy(), rtol=0, atol=1e-9)
