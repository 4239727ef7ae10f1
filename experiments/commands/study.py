"""Protocol study: the same target and attacks under the three split protocols.

    python cli.py study --config protocol_study.yaml
    python cli.py study --config protocol_study.yaml --fit_args '["--data.root", "/data/noaa"]'

For each protocol (``paper``: augment then split by picture; ``photo``: split photos then augment;
``group``: split whole encounters then augment) it runs ``cli.py fit`` with the same fit config,
seed and identities, and the attacks after fit. It then writes into ``<output>/version_N/``:

* ``report.md`` and ``summary.json``: per protocol the target's train and test accuracy, each
  attack's accuracy, AUC and TPR at 1% FPR; for ``paper`` the number of test pictures that have a
  copy of the same original in the training set (read from the manifest);
* ``attack_auc.png``: attack AUC per protocol, also logged to TensorBoard (``tensorboard/``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from jsonargparse import ActionConfigFile

from datamodules.manifest import read_manifest
from experiments.run.config_files import command_parser, parse_options


@dataclass
class StudySettings:
    """What the study runs.

    Args:
        fit_config: the fit config trained under every protocol.
        attack_config: the attack settings run after each fit.
        protocols: split protocols to compare (``paper``, ``photo``, ``group``).
        group_by: the grouping column of the ``group`` protocol.
        images_per_identity: photos per individual (None: all).
        fit_args: extra LightningCLI arguments for every fit.
        output: study folder; each study gets a new ``version_N`` inside.
    """

    fit_config: str = "demo.yaml"
    attack_config: str = "attack_study.yaml"
    protocols: list[str] = field(default_factory=lambda: ["paper", "photo", "group"])
    group_by: str = "encounter"
    images_per_identity: int | None = 36
    fit_args: list[str] = field(default_factory=list)
    output: str = "lightning_logs/protocol_study"


def study_folder(base: str | Path) -> Path:
    """A new ``<base>/version_N`` folder, created here: an earlier study is never written into
    (``mkdir`` without ``exist_ok`` fails rather than share a folder with a concurrent study)."""
    from experiments.fitting.suite_cli import next_version

    out = next_version(Path(base))
    out.mkdir(parents=True)
    return out


def run_study(s: StudySettings) -> dict:
    """Fit and attack once per protocol; returns the summary written to ``summary.json``."""
    from experiments.fitting.run_fit import run_fit as fit_main
    from experiments.fitting.suite_cli import fit_argv

    out = study_folder(s.output)
    results, identity_sets = {}, {}
    for protocol in s.protocols:
        run = out / protocol / "version_0"
        args = [
            "--data.split.split_protocol",
            protocol,
            "--data.split.group_by",
            s.group_by,
            "--trainer.enable_progress_bar",
            "false",
            "--attack_after_fit",
            s.attack_config,
        ]
        if s.images_per_identity:
            args += ["--data.split.images_per_identity", str(s.images_per_identity)]
        fit_main(["fit", *fit_argv(s.fit_config, run, args + list(s.fit_args))])
        rows, header = read_manifest(run)
        identity_sets[protocol] = sorted({(r["identity"], r["id_set"]) for r in rows})
        summary = json.loads((run / "attacks" / "summary.json").read_text())
        ctx = summary["context"]
        results[protocol] = {
            "run": str(run),
            "train_acc": ctx.get("train_acc"),
            "test_acc": ctx.get("test_acc"),
            "n_rows": header["n_rows"],
            "paper_overlap_test_in_train": header.get("paper_overlap_test_in_train"),
            "paper_test_rows": header.get("paper_test_rows"),
            "attacks": {
                name: {k: m.get(k) for k in ("acc", "auc", "tpr@1%fpr", "fpr")}
                for name, m in summary["metrics"].items()
            },
        }
    first = next(iter(identity_sets.values()))
    same = all(v == first for v in identity_sets.values())
    if not same:
        raise RuntimeError("the protocols produced different identity groups for one seed")
    study = {"settings": s.__dict__, "same_identity_groups": same, "protocols": results}
    (out / "summary.json").write_text(json.dumps(study, indent=2, default=str))
    _plot(out, results)
    (out / "report.md").write_text(_report(study))
    print(f"Protocol study report: {out / 'report.md'}")
    return study


def _plot(out: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    protocols = list(results)
    attacks = sorted({a for r in results.values() for a in r["attacks"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(attacks)), 3.5))
    width = 0.8 / max(1, len(protocols))
    x = np.arange(len(attacks))
    for i, p in enumerate(protocols):
        vals = [results[p]["attacks"].get(a, {}).get("auc") or 0.0 for a in attacks]
        ax.bar(x + i * width, vals, width, label=p)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x + width * (len(protocols) - 1) / 2, attacks, rotation=30, ha="right")
    ax.set_ylabel("attack AUC (evaluation set)")
    ax.set_ylim(0, 1)
    ax.legend(title="split protocol")
    fig.tight_layout()
    fig.savefig(out / "attack_auc.png", dpi=120)
    writer = SummaryWriter(str(out / "tensorboard"))
    writer.add_figure("study/attack_auc", fig)
    for p, r in results.items():
        for a, m in r["attacks"].items():
            if m.get("auc") is not None:
                writer.add_scalar(f"study/{a}_auc/{p}", m["auc"])
    writer.close()
    plt.close(fig)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _report(study: dict) -> str:
    res = study["protocols"]
    s = study["settings"]
    lines = [
        "# Split-protocol study",
        "",
        f"Fit config `{s['fit_config']}`, attacks `{s['attack_config']}`, group_by "
        f"`{s['group_by']}`, images_per_identity {s['images_per_identity']}, extra fit args "
        f"`{' '.join(s['fit_args'])}`. Same seed and the same ID1/ID2/ID3 individuals under every "
        f"protocol: {study['same_identity_groups']}.",
        "",
        "| protocol | train acc | test acc | test pictures with a copy in train |",
        "|---|---|---|---|",
    ]
    for p, r in res.items():
        overlap = (
            f"{r['paper_overlap_test_in_train']} of {r['paper_test_rows']}"
            if r["paper_overlap_test_in_train"] is not None
            else "0 (by construction)"
        )
        lines.append(f"| {p} | {_fmt(r['train_acc'])} | {_fmt(r['test_acc'])} | {overlap} |")
    attacks = sorted({a for r in res.values() for a in r["attacks"]})
    lines += [
        "",
        "Attack accuracy / AUC / TPR at 1% FPR on the balanced evaluation set:",
        "",
        "| attack | " + " | ".join(res) + " |",
        "|---|" + "---|" * len(res),
    ]
    for a in attacks:
        cells = []
        for p in res:
            m = res[p]["attacks"].get(a)
            cells.append(
                "n/a"
                if m is None
                else f"{_fmt(m['acc'])} / {_fmt(m['auc'])} / {_fmt(m['tpr@1%fpr'])}"
            )
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines += ["", "![attack AUC per protocol](attack_auc.png)", ""]
    return "\n".join(lines)


def parser():
    """The ``cli.py study`` argument parser."""
    p = command_parser("study", __doc__)
    p.add_argument("--config", action=ActionConfigFile, help="study settings YAML")
    p.add_class_arguments(StudySettings, None)
    return p


def main(argv: list[str]) -> dict:
    """Entry point of ``python cli.py study``."""
    cfg = parse_options(parser(), argv)
    settings = StudySettings(**{k: v for k, v in cfg.items() if k != "config"})
    return run_study(settings)
