"""Defense sweep (detection paper Table 4; whale paper Figure 9): train each variant with the same
seed and splits, then tabulate utility, attack success and privacy loss.

    python cli.py defend --config defense_sweep.yaml [--epochs 5] [--output DIR]
        [--fit_args '[--data.init_args.reader.init_args.n_individuals, "12"]']

Each variant is a ``cli.py fit`` run (in this process) of ``variants.<name>.config`` plus its
``args``, the sweep's ``fit_args`` and ``--trainer.max_epochs epochs``; runs land in
``<output>/<name>/version_0``. The numbers are read from each run's TensorBoard scalars at the last
epoch, as the leakage monitor logs them: ``leak/train_acc``, ``leak/test_acc`` (utility),
``attack/acc``, ``attack/auc`` (the Yeom loss-threshold attack on members vs non-members),
``leak/gap``; and for DP runs ``dp/epsilon`` (Opacus RDP, Poisson) and ``dp/epsilon_yu`` (the
paper's Yu et al. bound) beside ``leak/eps_lb``, the empirical lower bound on epsilon that the
best of the leakage monitor's attacks proves at the sample level (Clopper-Pearson, 95% with
Bonferroni over the attacks; :mod:`attacks.dp_audit`), and ``epsilon_lb_attack``, which attack
that is (``-`` when none proves more than 0): the accountant's epsilon is an upper bound, the
audit's a lower one. Writes ``<output>/defense_table.csv``, ``defense_table.md`` and
``privacy_utility.png`` (test accuracy and attack AUC against epsilon; non-DP runs at epsilon =
inf on the right edge), and ``overfit_vs_no_overfit.png`` when both ``base`` and ``no_overfit``
variants ran (Figure 9's comparison).

Nothing in ``<output>`` is overwritten: several sweeps (``--only`` runs) may share it, each variant
once. A variant whose folder exists is refused before anything trains (leave it out of ``--only``;
``--overwrite`` removes and retrains it), and when a table from an earlier sweep is there the
new table and plots get the first free suffix (``defense_table-1.csv``, ``privacy_utility-1.png``).
"""

from __future__ import annotations

import csv
import glob
import io
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from datamodules.errors import DataError
from experiments.run.config_files import add_flag, command_parser, parse_options
from experiments.run.outputs import fresh_tag, write_text

COLUMNS = (
    "variant",
    "train_acc",
    "test_acc",
    "gap",
    "attack_acc",
    "attack_auc",
    "epsilon",
    "epsilon_lb",
    "epsilon_lb_attack",
    "epsilon_yu",
    "noise_multiplier",
    "epochs",
)
TAGS = {
    "train_acc": "leak/train_acc",
    "test_acc": "leak/test_acc",
    "gap": "leak/gap",
    "attack_acc": "attack/acc",
    "attack_auc": "attack/auc",
    "epsilon": "dp/epsilon",
    "epsilon_lb": "leak/eps_lb",
    "epsilon_yu": "dp/epsilon_yu",
    "noise_multiplier": "dp/noise_multiplier",
}


@dataclass
class Variant:
    config: str = "demo.yaml"
    args: list[str] = field(default_factory=list)


def last_scalars(run: Path) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, tuple[int, float]] = {}
    for ev in sorted(glob.glob(str(run / "events.out.tfevents.*"))):
        acc = EventAccumulator(ev)
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for e in acc.Scalars(tag):
                if tag not in out or e.step >= out[tag][0]:
                    out[tag] = (e.step, e.value)
    return {k: v for k, (_, v) in out.items()}


def summarize(name: str, run: Path, epochs: int) -> dict:
    from attacks.epoch_leakage import best_audit_attack

    s = last_scalars(run)
    row = {"variant": name, "epochs": epochs}
    for col, tag in TAGS.items():
        row[col] = s.get(tag, math.nan)
    stem, _ = best_audit_attack(s)
    row["epsilon_lb_attack"] = stem or "-"
    return row


#: the files a sweep writes into ``<output>`` (stem, suffix); they share one :func:`fresh_tag`
TABLE_FILES = [
    ("defense_table", ".csv"),
    ("defense_table", ".md"),
    ("privacy_utility", ".png"),
    ("overfit_vs_no_overfit", ".png"),
]


def claim_runs(names: list[str], out: Path, overwrite: bool = False) -> dict[str, Path]:
    """``{variant: <out>/<variant>/version_0}``; a variant folder that exists is refused (one
    DataError line, before anything trains) unless ``overwrite``."""
    for name in names:
        if (out / name).exists() and not overwrite:
            raise DataError(
                f"{out / name}: variant {name!r} already ran in this sweep folder and is kept. "
                "Leave it out of --only, choose another --output, or pass --overwrite to train "
                "it again."
            )
    return {name: out / name / "version_0" for name in names}


def write_table(rows: list[dict], out: Path, tag: str = "") -> None:
    """``<output>/defense_table{tag}.csv`` and ``.md``."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(out / f"defense_table{tag}.csv", buf.getvalue())

    def fmt(v):
        if isinstance(v, float):
            return "-" if math.isnan(v) else (f"{v:.3g}" if abs(v) >= 1e3 else f"{v:.3f}")
        return str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    write_text(out / f"defense_table{tag}.md", "\n".join(lines) + "\n")


def plot(rows: list[dict], out: Path, tag: str = "") -> None:
    """``<output>/privacy_utility{tag}.png`` (and ``overfit_vs_no_overfit{tag}.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = [r["epsilon"] for r in rows if not math.isnan(r["epsilon"])]
    right = max(finite) * 3 if finite else 10.0
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        x = right if math.isnan(r["epsilon"]) else r["epsilon"]
        ax.scatter(x, r["test_acc"], marker="o", color="tab:blue")
        ax.scatter(x, r["attack_auc"], marker="s", color="tab:red")
        ax.annotate(
            r["variant"], (x, r["test_acc"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    ax.axhline(0.5, ls=":", color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon (RDP, delta=1e-5); non-DP runs at the right edge")
    ax.set_ylabel("value")
    ax.scatter([], [], marker="o", color="tab:blue", label="test accuracy")
    ax.scatter([], [], marker="s", color="tab:red", label="attack AUC")
    ax.legend(fontsize=8)
    ax.set_title("privacy-utility trade-off")
    fig.tight_layout()
    fig.savefig(out / f"privacy_utility{tag}.png", dpi=120)
    plt.close(fig)
    by = {r["variant"]: r for r in rows}
    if "base" in by and "no_overfit" in by:
        fig, ax = plt.subplots(figsize=(4, 3))
        names = ["base", "no_overfit"]
        ax.bar([0, 1], [by[n]["attack_acc"] for n in names], width=0.35, label="attack acc")
        ax.bar([0.35, 1.35], [by[n]["attack_auc"] for n in names], width=0.35, label="attack AUC")
        ax.set_xticks([0.17, 1.17], ["overfit", "no overfit"])
        ax.axhline(0.5, ls=":", color="grey")
        ax.legend(fontsize=8)
        ax.set_title("overfit vs no-overfit (Fig. 9)")
        fig.tight_layout()
        fig.savefig(out / f"overfit_vs_no_overfit{tag}.png", dpi=120)
        plt.close(fig)


def fit_main(argv: list[str]) -> None:
    """``cli.py fit`` (experiments.fitting loads Lightning: imported when a sweep trains)."""
    from experiments.fitting.run_fit import run_fit as main

    main(argv)


def fit_argv(config: str, run_dir: Path, args: list[str]) -> list[str]:
    """:func:`experiments.fitting.suite_cli.fit_argv`, imported when a sweep trains."""
    from experiments.fitting.suite_cli import fit_argv as make

    return make(config, run_dir, args)


def run_sweep(
    variants: dict[str, Variant],
    epochs: int,
    out: str | Path,
    fit_args: list[str] | None = None,
    only: list[str] | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """Train the chosen variants into ``<output>`` and write the table and plots (never over an
    earlier sweep's files; see the module docstring). Returns the table rows."""
    out = Path(out)
    unknown = sorted(set(only or ()) - set(variants))
    if unknown:
        raise DataError(f"--only {unknown}: no such variant; choose from {sorted(variants)}")
    runs = claim_runs([n for n in variants if not only or n in only], out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, run in runs.items():
        v = variants[name]
        if overwrite and run.parent.exists():
            shutil.rmtree(run.parent)
        extra = [*v.args, *(fit_args or []), "--trainer.max_epochs", str(epochs)]
        args = ["fit", *fit_argv(v.config, run, [*extra, "--attack_after_fit", "null"])]
        print(f"[defend] {name}: python cli.py {' '.join(args)}")
        fit_main(args)
        rows.append(summarize(name, run, epochs))
    tag = "" if overwrite else fresh_tag(out, TABLE_FILES)
    write_table(rows, out, tag)
    plot(rows, out, tag)
    print((out / f"defense_table{tag}.md").read_text())
    print(f"[defend] table and plots in {out} (defense_table{tag}.*)")
    return rows


def parser():
    """The ``cli.py defend`` argument parser."""
    from jsonargparse import ActionConfigFile

    p = command_parser("defend", __doc__)
    p.add_argument("--config", action=ActionConfigFile, help="sweep settings YAML")
    p.add_argument(
        "--variants", type=dict[str, Variant], default={}, help="name -> fit config and args"
    )
    p.add_argument("--epochs", type=int, default=20, help="training epochs of every variant")
    p.add_argument(
        "--output", type=str, default="lightning_logs/defense_sweep", help="sweep folder"
    )
    p.add_argument("--fit_args", type=list[str], default=[], help="extra args for every fit")
    p.add_argument("--only", type=list[str] | None, default=None, help="run only these variants")
    add_flag(
        p,
        "overwrite",
        "retrain variants whose folder exists in --output (removed first) and replace the table",
    )
    return p


def main(argv: list[str]) -> list[dict]:
    """Entry point of ``python cli.py defend``."""
    cfg = parse_options(parser(), argv)
    variants = {
        k: v if isinstance(v, Variant) else Variant(**dict(v)) for k, v in cfg.variants.items()
    }
    if not variants:
        raise DataError("cli.py defend: no variants; give --config defense_sweep.yaml")
    return run_sweep(variants, cfg.epochs, cfg.output, cfg.fit_args, cfg.only, cfg.overwrite)
