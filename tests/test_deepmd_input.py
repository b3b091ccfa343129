"""DeePMD-kit input.json: defaults checked against DeePMD-kit's own argument table, every key honoured or refused."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("ase")

from graphdesc.cli import main  # noqa: E402
from graphdesc.model.checkpoint import load_model  # noqa: E402
from graphdesc.train import emt_dataset  # noqa: E402
from graphdesc.train.deepmd_data import write_systems  # noqa: E402
from graphdesc.train.deepmd_input import DEFAULTS, FIXED, read_input  # noqa: E402

MINIMAL = {"model": {"type_map": ["Al", "Cu"], "descriptor": {"type": "se_atten"}, "fitting_net": {}},
           "learning_rate": {"type": "exp", "start_lr": 0.001}, "loss": {"type": "ener"},
           "training": {"training_data": {"systems": ["data/train"]}, "validation_data": {"systems": ["data/val"]},
                        "numb_steps": 100}}

#: Keys graphdesc fixes at a value that is not DeePMD-kit's default, or refuses even there.
NOT_DEEPMD_DEFAULT = {("training", "save_ckpt"), ("training", "max_ckpt_keep")}


def _sections(normalized):
    m, t = normalized["model"], normalized["training"]
    return {"descriptor": m["descriptor"], "fitting_net": m["fitting_net"], "model": m,
            "learning_rate": normalized["learning_rate"], "loss": normalized["loss"], "training": t,
            "training_data": t["training_data"], "validation_data": t["validation_data"]}


@pytest.fixture(scope="module")
def normalized():
    argcheck = pytest.importorskip("deepmd.utils.argcheck", reason="deepmd-kit is in graphdesc[test]")
    return argcheck.normalize(copy.deepcopy(MINIMAL))


def test_defaults_are_deepmd_kits(normalized):
    """graphdesc's tables hold DeePMD-kit 3.2's input-file defaults (deepmd.utils.argcheck.normalize)."""
    theirs = _sections(normalized)
    for section, table in DEFAULTS.items():
        for key, value in table.items():
            if key == "stop_lr":  # DeePMD-kit's normalize fills 5e-8 when neither stop_lr nor the ratio is given
                assert theirs[section][key] == 5e-8
                continue
            assert theirs[section].get(key) == value, (section, key)  # absent = None (optional, no default)
    for section, table in FIXED.items():
        for key, value in table.items():
            if key in ("type",) or (section, key) in NOT_DEEPMD_DEFAULT:
                continue
            allowed = value if isinstance(value, tuple) else (value,)
            assert theirs[section].get(key, allowed[0]) in allowed, (section, key)
    # the documented differences from the DescrptDPA1 class defaults that DPA1Config follows
    d = DEFAULTS["descriptor"]
    assert (d["smooth_type_embedding"], d["set_davg_zero"], d["axis_neuron"]) == (False, True, 4)
    assert DEFAULTS["loss"]["intensive_ener_virial"] is False


def test_every_deepmd_key_is_honoured_or_refused(normalized, tmp_path):
    """DeePMD-kit's fully normalized input (every key spelled out at its default) is accepted, except
    the keys graphdesc refuses by name, one at a time."""
    full = copy.deepcopy(normalized)
    refused = [("training", "save_ckpt"), ("training", "max_ckpt_keep"), ("model", "data_bias_nsample")]
    values = {(section, key): full[section].pop(key) for section, key in refused}
    for (section, key), value in values.items():
        one = copy.deepcopy(full)
        one[section][key] = value
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps(one))
        with pytest.raises(ValueError, match=rf"{section}.{key} is not supported by graphdesc: graphdesc"):
            read_input(path)
    path = tmp_path / "input.json"
    path.write_text(json.dumps(full))
    got = read_input(path)
    assert got.descriptor["neuron"] == [10, 20, 40] and got.sel == ("auto", 1.1)
    assert got.train["stop_lr"] == 5e-8 and got.train["decay_steps"] == 2  # DeePMD-kit's fit: 100 // 100 + 1
    assert got.train["loss"].intensive is False and got.fitting["neuron"] == (120, 120, 120)


@pytest.mark.parametrize("steps,decay_steps", [(100, 5000), (600, 5000), (20000, 5000), (3000, 40)])
def test_schedule_matches_deepmd(tmp_path, steps, decay_steps):
    """The learning rate at every step equals DeePMD-kit's LearningRateExp for the same input (1e-12 relative),
    including its shortening of a decay_steps that does not fit the run."""
    lr_mod = pytest.importorskip("deepmd.dpmodel.utils.learning_rate", reason="deepmd-kit is in graphdesc[test]")
    from graphdesc.train import TrainConfig

    data = copy.deepcopy(MINIMAL)
    data["training"]["numb_steps"] = steps
    data["learning_rate"].update(stop_lr=3e-6, decay_steps=decay_steps)
    path = tmp_path / "input.json"
    path.write_text(json.dumps(data))
    ours = TrainConfig(**{**read_input(path).train, "batch_size": 1}).schedule()
    theirs = lr_mod.LearningRateExp(start_lr=1e-3, stop_lr=3e-6, decay_steps=decay_steps, num_steps=steps)
    assert ours.decay_steps == theirs.decay_steps
    grid = np.unique(np.linspace(0, steps, 200).astype(int))
    np.testing.assert_allclose([ours(int(k)) for k in grid], [float(theirs.value(int(k))) for k in grid],
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["model"]["descriptor"].update(foo=1), r"model.descriptor.foo is not supported by graphdesc"),
    (lambda d: d["model"]["descriptor"].update(trainable=False),
     r"model.descriptor.trainable = False is not supported by graphdesc \(it implements True only\)"),
    (lambda d: d["model"]["descriptor"].update(type="se_e2_a"), r"model.descriptor.type = 'se_e2_a'"),
    (lambda d: d["model"]["descriptor"].update(tebd_input_mode="strip"), r"tebd_input_mode = 'strip'"),
    (lambda d: d["model"]["fitting_net"].update(numb_fparam=2), r"fitting_net.numb_fparam = 2"),
    (lambda d: d["loss"].update(start_pref_ae=1.0), r"loss.start_pref_ae = 1.0"),
    (lambda d: d["loss"].update(type="dos"), r"loss.type = 'dos'"),
    (lambda d: d["learning_rate"].update(warmup_steps=10), r"learning_rate.warmup_steps = 10"),
    (lambda d: d["learning_rate"].update(stop_lr=1e-6, stop_lr_ratio=0.01), r"exclude each other"),
    (lambda d: d["learning_rate"].pop("start_lr"), r"learning_rate.start_lr is required"),
    (lambda d: d["training"].update(stat_file="stat.h5"), r"training.stat_file is not supported by graphdesc: "
                                                          r"graphdesc computes the statistics"),
    (lambda d: d["training"].update(numb_epoch=3), r"training.numb_epoch is not supported"),
    (lambda d: d["training"]["training_data"].update(auto_prob="prob_uniform"), r"auto_prob = 'prob_uniform'"),
    (lambda d: d["model"]["fitting_net"].update(precision="float32"), r"fitting_net.precision .* must equal"),
    (lambda d: d["model"]["descriptor"].update(precision="bfloat16"), r"supports 'float64' \('default'\)"),
    (lambda d: d["model"].update(spin={}), r"model.spin is not supported"),
    (lambda d: d.update(nvnmd={}), r"nvnmd is not supported"),
])
def test_refused_by_name(tmp_path, edit, message):
    data = copy.deepcopy(MINIMAL)
    edit(data)
    path = tmp_path / "input.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        read_input(path)


def test_aliases_and_comments(tmp_path):
    data = copy.deepcopy(MINIMAL)
    data["_comment"] = "that's all"
    data["model"]["descriptor"].update(n_axis_neuron=8, _comment="x")
    data["model"]["fitting_net"]["n_neuron"] = [32, 32]
    data["training"]["stop_batch"] = data["training"].pop("numb_steps")
    data["training"]["validation_data"]["numb_batch"] = 3
    path = tmp_path / "input.json"
    path.write_text(json.dumps(data))
    got = read_input(path)
    assert got.descriptor["axis_neuron"] == 8 and got.fitting["neuron"] == (32, 32)
    assert got.train["steps"] == 100 and got.numb_btch == 3


@pytest.fixture(scope="module")
def demo_input(tmp_path_factory):
    root = tmp_path_factory.mktemp("input")
    train_set, val_set = emt_dataset(24, seed=0).split(0.25)
    write_systems(train_set, root / "data" / "train")
    write_systems(val_set, root / "data" / "val")
    data = {"model": {"type_map": ["Cu", "Al"], "descriptor": {"type": "dpa1", "sel": "auto", "rcut": 5.0,
                                                               "neuron": [8, 16], "attn": 16, "attn_layer": 1,
                                                               "seed": 3},
                      "fitting_net": {"neuron": [32, 32], "seed": 3}},
            "learning_rate": {"type": "exp", "start_lr": 2e-3, "stop_lr": 1e-4, "decay_steps": 4},
            "loss": {"type": "ener", "start_pref_v": 0.02, "limit_pref_v": 1.0},
            "training": {"training_data": {"systems": "data/train", "batch_size": "auto:64"},
                         "validation_data": {"systems": ["data/val"], "batch_size": 2, "numb_btch": 2},
                         "numb_steps": 12, "seed": 5, "disp_freq": 4, "save_freq": 2, "disp_file": "curve.txt"}}
    (root / "input.json").write_text(json.dumps(data))
    return root


def test_cli_trains_from_deepmd_input(demo_input, tmp_path, capsys):
    """``graphdesc train input.json`` builds the model, schedule, loss and data the input describes."""
    status = main(["train", str(demo_input / "input.json"), "-o", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0, out
    config, _, extra = load_model(tmp_path / "checkpoint.npz")
    d = config.descriptor
    assert d.type_map == ("Cu", "Al") and d.neuron == (8, 16) and d.axis_neuron == 4 and d.attn == 16
    assert d.smooth_type_embedding is False and d.set_davg_zero is True and d.sel % 4 == 0
    assert config.neuron == (32, 32) and config.resnet_dt is True
    tc = extra["train_config"]
    assert (tc["steps"], tc["batch_size"], tc["decay_steps"], tc["val_every"], tc["save_every"]) == (12, 2, 4, 4, 2)
    assert tc["loss"]["intensive"] is False and tc["loss"]["start_pref_v"] == 0.02 and tc["seed"] == 5
    assert "val:   4 frames" in out  # numb_btch 2 x batch_size 2 of the 6 validation frames
    curve = np.loadtxt(tmp_path / "curve.txt")
    assert curve[:, 0].tolist() == [0, 4, 8, 12] and np.isfinite(curve[:, 1:4]).all()
    with pytest.raises(SystemExit):
        main(["train", str(demo_input / "input.json"), "--steps"])
    assert main(["train", str(demo_input / "input.json"), "-o", str(tmp_path), "--steps", "5"]) == 1
    assert "the flags ['--steps'] cannot change it" in capsys.readouterr().err
