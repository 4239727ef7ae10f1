"""Settings checked before anything runs, each refused in one line naming the key: the attack
settings (signal names, rules, bootstrap replicates, seeds, device), the fit's accelerator and
a config value of the wrong type. (The accelerator check called directly:
tests/test_input_checks.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cli
from experiments.commands.attack import parser as attack_parser
from experiments.fitting.config_keys import config_key_error
from experiments.settings.attack import AttackSettings
from tests.cli_checks import one_error_line as refused

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# ---- cli.py attack ----------------------------------------------------------------------------

BAD_ATTACK_SETTINGS = [
    (["--yeom.signal", "loss"], "yeom.signal='loss': unknown value 'loss'; choose from loss_pred"),
    (["--salem.threshold", "best"], "salem.threshold='best'"),
    (["--label_only.method", "hsj"], "label_only.method='hsj'"),
    (["--ensemble.rules", "[any, most]"], "ensemble.rules=['any', 'most']: unknown value 'most'"),
    (["--calibrated.levels", "[photo]"], "calibrated.levels=['photo']"),
    (["--calibrated.variance", "pooled"], "calibrated.variance='pooled'"),
    (["--calibrated.n_boot", "0"], "calibrated.n_boot=0: give an integer from 10 to 100000"),
    (["--seed", "-1"], "seed=-1: give an integer from 0 to 4294967295"),
    (["--label_only.seed", str(2**32)], f"label_only.seed={2**32}: give an integer from 0"),
    (["--salem.shadow.seed", "-5"], "salem.shadow.seed=-5"),
    (["--reference.seed", str(2**40)], "reference.seed="),
    (["--ensemble.base", "nosuch"], "ensemble.base='nosuch': unknown value 'nosuch'; choose"),
    (["--salem.topk", "0"], "salem.topk=0"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_ATTACK_SETTINGS)
def test_bad_attack_settings_are_one_line_naming_the_key(tmp_path, capsys, args, expected):
    run = tmp_path / "run"
    run.mkdir()
    line = refused(["attack", "--run", str(run), *args], capsys)
    assert expected in line
    assert list(run.iterdir()) == []  # nothing written


def test_unknown_signal_lists_the_known_ones(tmp_path, capsys):
    line = refused(["attack", "--run", str(tmp_path), "--yeom.signal", "bogus"], capsys)
    assert line.endswith("choose from loss_pred, loss_true.")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_attack_on_a_gpu_this_machine_lacks(tmp_path, capsys):
    line = refused(["attack", "--run", str(tmp_path), "--device", "cuda"], capsys)
    assert "device='cuda': this machine has 0 CUDA GPU(s) (no such device here)" in line


@pytest.mark.parametrize("name", sorted(p.name for p in (CONFIGS / "attack").glob("*.yaml")))
def test_the_shipped_attack_configs_pass_the_checks(name):
    p = attack_parser()
    cfg = p.parse_args(["--config", str(CONFIGS / "attack" / name), "--run", "x"])
    inst = p.instantiate_classes(cfg)
    AttackSettings(**{k: inst[k] for k in AttackSettings.__dataclass_fields__})


# ---- cli.py fit: the accelerator --------------------------------------------------------------


@pytest.mark.parametrize("acc", ["gpu", "cuda"])
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_fit_on_a_gpu_this_machine_lacks(tmp_path, tiny_args, capsys, acc):
    argv = tiny_args(tmp_path, 1) + ["--trainer.accelerator", acc]
    line = refused(argv, capsys)
    assert (
        f"trainer.accelerator={acc!r}: this machine has no CUDA GPU (no such device here)" in line
    )
    assert "use 'cpu', or 'auto'" in line
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").rglob("version_*"))


# ---- a value of the wrong type, an unknown key ------------------------------------------------

NESTED = (
    'Parser key "data":\n  Does not validate against any of the Union subtypes\n  Errors:\n'
    "    - Problem with given class_path 'datamodules.whale.WhaleDataModule':\n"
    '        Parser key "loader.image_size":\n'
    "          Expected a <class 'int'>. Got value: 3.5\n"
    "    - Expected a <class 'NoneType'>\n"
    "  Given value: NestedArg(key='loader.image_size', val='3.5')"
)


def test_a_wrong_type_names_the_type_not_an_unknown_key():
    argv = ["--data.init_args.loader.image_size", "3.5"]
    msg = str(config_key_error(NESTED, argv))
    assert msg == (
        "data.init_args.loader.image_size=3.5: must be an integer (a whole number). Fix the "
        "value (cli.py fit --help lists it)."
    )
    from_yaml = str(config_key_error(NESTED, []))  # spelled in a config file: the full path
    assert from_yaml.startswith("data.init_args.loader.image_size=3.5: must be an integer")
    literal = "Parser key \"x.mode\":\n  Expected a typing.Literal['a', 'b']. Got value: c"
    assert str(config_key_error(literal)).startswith("x.mode=c: must be one of 'a', 'b'.")


def test_an_unknown_key_still_gets_the_closest_one():
    text = NESTED.replace(
        "Parser key \"loader.image_size\":\n          Expected a <class 'int'>. Got value: 3.5",
        "unrecognized arguments: --loader.imagesize=3",
    )
    msg = str(config_key_error(text, ["--data.init_args.loader.imagesize", "3"]))
    assert msg.startswith("config key 'data.init_args.loader.imagesize' is not an option.")
    assert "Did you mean data.init_args.loader.image_size?" in msg


@pytest.mark.parametrize(
    "key, value",
    [
        ("model.init_args.optimizer.init_args.lr", "-1"),
        ("model.init_args.optimizer.init_args.lr", "0"),
    ],
)
def test_a_learning_rate_must_be_positive(key, value, capsys):

    with pytest.raises(SystemExit) as info:
        cli.main(["fit", "--config", "demo.yaml", f"--{key}", value])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and err[-1].startswith(f"error: {key}=")
    assert "a learning rate must be a positive number" in err[-1]
