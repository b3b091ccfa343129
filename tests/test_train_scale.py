"""Training beyond one process and one run: DDP over gloo, restart after SIGKILL, NaN stops.

The command-line runs share one small setup (the demo data, 24 frames; the
``small`` preset; float64; 24 steps of 4 frames) and are each run once per
session: an uninterrupted 1-process run, the same with 2 processes, and a
1-process and a 2-process run killed with SIGKILL mid-run and restarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ase")
pytest.importorskip("tqdm")

from graphdesc.cli import main  # noqa: E402
from graphdesc.descriptor.params import tree_leaves  # noqa: E402
from graphdesc.model.checkpoint import load_model  # noqa: E402
from graphdesc.torch import EnergyModel  # noqa: E402
from graphdesc.train import (  # noqa: E402
    LossConfig,
    TrainConfig,
    TrainingDiverged,
    emt_dataset,
    fit_statistics,
    train,
)

STEPS = 24
TRAIN = ["train", "--demo", "--demo-frames", "24", "--steps", str(STEPS), "--batch-size", "4", "--save-every", "2",
         "--pref-v", "0.02", "1", "--no-progress"]


def _cli(out, *extra, background=False):
    cmd = [sys.executable, "-m", "graphdesc", *TRAIN, "-o", str(out), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if background:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _checkpoint(out):
    config, params, extra = load_model(out / "checkpoint.npz")
    return dict(tree_leaves(params)), extra


def _killed_and_restarted(out, *extra, kill_after=7):
    """Start a run, SIGKILL its whole process group once a checkpoint of step >= kill_after exists,
    check that it died mid-run, then restart it from that checkpoint; returns the restart's output.

    18 training frames in batches of 4 make 5 steps an epoch: step 7 and later lie in the second epoch or
    beyond, so the restart must restore the data-order RNG (in the first epoch the seed alone would do)."""
    proc = _cli(out, *extra, background=True)
    deadline = time.monotonic() + 300
    step = -1
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "checkpoint.npz").exists():
            step = _checkpoint(out)[1]["step"]
            if step >= kill_after:
                break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stdout.read()}"
    workers = _descendants(proc.pid)  # torchrun's workers run in sessions of their own
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    gone = time.monotonic() + 30
    while time.monotonic() < gone and any(os.path.exists(f"/proc/{pid}") and _state(pid) != "Z" for pid in workers):
        time.sleep(0.05)
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}") and _state(pid) != "Z"], \
        "worker processes outlived their killed launcher"
    killed_at = _checkpoint(out)[1]["step"]
    assert kill_after <= killed_at < STEPS, f"the kill did not land mid-run (checkpoint step {killed_at})"
    stdout = _cli(out, *extra, "--restart", str(out / "checkpoint.npz"))
    assert f"restarted from {out / 'checkpoint.npz'} at step {killed_at} of {STEPS}" in stdout
    return stdout


def _state(pid) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _descendants(pid) -> list:
    """Every live descendant of ``pid`` (Linux /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    _cli(root / "one")
    _cli(root / "two", "--nproc", "2")
    _killed_and_restarted(root / "one-killed")
    _killed_and_restarted(root / "two-killed", "--nproc", "2")
    return root


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def _rows(out):
    return json.loads((out / "history.json").read_text())["rows"]


def test_two_processes_equal_one(runs):
    """DDP over gloo: each rank takes half of every global batch; the parameters after 24 steps and
    every validation row equal the 1-process run's (1e-10, float64)."""
    one, two = _checkpoint(runs / "one"), _checkpoint(runs / "two")
    assert one[1]["step"] == two[1]["step"] == STEPS
    diff = _max_diff(one[0], two[0])
    print(f"\n2 processes vs 1 after {STEPS} steps: max |param diff| {diff:.2e}")
    assert diff < 1e-10
    rows1, rows2 = _rows(runs / "one"), _rows(runs / "two")
    assert [r["step"] for r in rows1] == [r["step"] for r in rows2] and len(rows1) >= 4
    for r1, r2 in zip(rows1, rows2):
        for c in ("energy", "force", "virial"):
            assert r2["val"][c] == pytest.approx(r1["val"][c], rel=1e-10, abs=0)
        if r1["train_loss"] is not None:
            assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=1e-10, abs=0)


@pytest.mark.parametrize("name,reference", [("one-killed", "one"), ("two-killed", "two")])
def test_restart_after_sigkill_is_exact(runs, name, reference):
    """A run killed by SIGKILL and restarted from its last checkpoint ends with the parameters and
    the validation history of the uninterrupted run (1e-12; in practice bit for bit)."""
    got, want = _checkpoint(runs / name), _checkpoint(runs / reference)
    diff = _max_diff(got[0], want[0])
    print(f"\n{name}: max |param diff| from the uninterrupted run {diff:.2e}")
    assert diff <= 1e-12
    rows, ref = _rows(runs / name), _rows(runs / reference)
    assert [r["step"] for r in rows] == [r["step"] for r in ref]
    for a, b in zip(rows, ref):
        for c in ("energy", "force", "virial"):
            assert a["val"][c] == pytest.approx(b["val"][c], rel=1e-12, abs=0)
    assert not list((runs / name).glob(".*.tmp")), "a stale temporary checkpoint was left behind"


# -- in-process: restart checks, NaN stops -------------------------------------------------------------------
@pytest.fixture(scope="module")
def split():
    return emt_dataset(12, seed=3).split(0.25)


def _model(train_set):
    from test_train import small_model

    m = small_model()
    fit_statistics(m, train_set)
    return m


CONFIG = TrainConfig(steps=10, batch_size=4, val_every=3, save_every=2, loss=LossConfig(start_pref_v=0.02,
                                                                                         limit_pref_v=1.0))


def test_restart_refuses_a_different_run(split, tmp_path):
    train_set, val_set = split
    model = _model(train_set)
    train(model, train_set, val_set, CONFIG, output=tmp_path, progress=False, log=lambda s: None)
    ckpt = tmp_path / "checkpoint.npz"
    with pytest.raises(ValueError, match=r"differ in batch_size \(4 in the checkpoint, now 2\)"):
        train(EnergyModel.load(ckpt), train_set, val_set, TrainConfig(steps=10, batch_size=2), restart=ckpt,
              progress=False)
    with pytest.raises(ValueError, match="training data differ"):
        train(EnergyModel.load(ckpt), val_set, train_set, CONFIG, restart=ckpt, progress=False)
    with pytest.raises(ValueError, match="without a training state"):
        train(EnergyModel.load(ckpt), train_set, val_set, CONFIG, restart=tmp_path / "best.npz", progress=False)
    # a restart of a finished run trains nothing and adds no row
    history = train(EnergyModel.load(ckpt), train_set, val_set, CONFIG, restart=ckpt, progress=False,
                    log=lambda s: None)
    assert history.rows[-1]["step"] == 10 and len(history.rows) == len(_rows(tmp_path))


def test_restart_loads_weights_into_the_given_model(split, tmp_path):
    """``restart=`` puts the checkpoint's weights into the model it is given (a fresh one here)."""
    train_set, val_set = split
    done = _model(train_set)
    ref = train(done, train_set, val_set, CONFIG, output=tmp_path / "ref", progress=False, log=lambda s: None)

    class Stop(BaseException):
        pass

    def stop_at_six(line):
        if line.split()[0] == "6":
            raise Stop

    with pytest.raises(Stop):
        train(_model(train_set), train_set, val_set, CONFIG, output=tmp_path / "cut", progress=False, log=stop_at_six)
    fresh = _model(train_set)  # untrained weights: the restart must replace them
    history = train(fresh, train_set, val_set, CONFIG, output=tmp_path / "cut", progress=False, log=lambda s: None,
                    restart=tmp_path / "cut" / "checkpoint.npz")
    for a, b in zip(done.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert [r["val"] for r in history.rows] == [r["val"] for r in ref.rows]


def test_nan_loss_stops_naming_step_and_term(split, tmp_path, monkeypatch):
    """A NaN force term at step 7 stops the run with the step and the term in the message; the
    checkpoint of step 6 stays, loadable, and nothing is written after it."""
    import graphdesc.train.trainer as trainer

    train_set, val_set = split
    real = trainer.loss_terms
    calls = {"n": 0}

    def poisoned(pred, batch, components, **kw):
        terms = real(pred, batch, components, **kw)
        calls["n"] += 1
        if calls["n"] == 8:  # the 8th training batch is step 7
            terms["force"] = terms["force"] * float("nan")
        return terms

    monkeypatch.setattr(trainer, "loss_terms", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 7: the force loss term became nan .*checkpoint.npz \(step 6\)"):
        train(_model(train_set), train_set, val_set, CONFIG, output=tmp_path, progress=False, log=lambda s: None)
    assert _checkpoint(tmp_path)[1]["step"] == 6
    assert all(np.isfinite(v).all() for v in _checkpoint(tmp_path)[0].values())


def test_nan_gradient_stops_naming_the_parameter(split, tmp_path):
    train_set, val_set = split
    model = _model(train_set)
    name, param = next((n, p) for n, p in model.named_parameters() if "fitting" in n)
    steps = {"n": 0}

    def hook(grad):
        steps["n"] += 1
        return grad * float("inf") if steps["n"] == 4 else grad

    param.register_hook(hook)
    # the 4th step (index 3) fails; the checkpoint of the validation after 3 steps is the last good one
    with pytest.raises(TrainingDiverged, match=rf"step 3: the gradient of {name} became NaN/inf.*\(step 3\)"):
        train(model, train_set, val_set, CONFIG, output=tmp_path, progress=False, log=lambda s: None)
    assert _checkpoint(tmp_path)[1]["step"] == 3


def test_cli_nan_exits_nonzero(tmp_path, capsys, monkeypatch):
    import graphdesc.train.trainer as trainer

    real = trainer.loss_terms
    calls = {"n": 0}

    def poisoned(pred, batch, components, **kw):
        calls["n"] += 1
        terms = real(pred, batch, components, **kw)
        if calls["n"] == 4:
            terms["energy"] = terms["energy"] + float("inf")
        return terms

    monkeypatch.setattr(trainer, "loss_terms", poisoned)
    status = main(TRAIN + ["-o", str(tmp_path), "--demo-frames", "12", "--steps", "8"])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("graphdesc train: error: training stopped at step 3: the energy loss term became inf")
    # 9 training frames: an epoch (and a validation with its checkpoint) every 3 steps
    assert f"{tmp_path / 'checkpoint.npz'} (step 3), is kept" in err
    assert load_model(tmp_path / "checkpoint.npz")[2]["step"] == 3


def test_compiled_modes_refused_under_ddp(split, monkeypatch):
    import graphdesc.train.trainer as trainer
    from graphdesc.train.distributed import Ranks

    monkeypatch.setattr(trainer, "ranks", lambda: Ranks(0, 2))
    train_set, val_set = split
    with pytest.raises(ValueError, match=r"mode 'traced' does not run under DistributedDataParallel \(2 processes\)"):
        train(_model(train_set), train_set, val_set, TrainConfig(steps=2, mode="traced"), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here): --device cuda training")
def test_cuda_training_equals_cpu(tmp_path):
    """``graphdesc train --device cuda`` follows the CPU run (float64, 6 steps) to 1e-10."""
    short = ["--steps", "6", "--save-every", "3"]
    _cli(tmp_path / "cpu", *short)
    _cli(tmp_path / "cuda", *short, "--device", "cuda")
    assert _max_diff(_checkpoint(tmp_path / "cpu")[0], _checkpoint(tmp_path / "cuda")[0]) < 1e-10
