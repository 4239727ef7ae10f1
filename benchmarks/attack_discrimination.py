"""Discrimination cost: the metric attack (Yeom loss threshold) and the MLP attack (Salem) scoring
new photos, against one batched forward pass of the target model over the same photos.

    python benchmarks/attack_discrimination.py [--n 64] [--repeats 15] [--threads 2]
        [--device cpu] [--full]

The target is the demo classifier (``configs/fit/demo.yaml``: resnet18, overfit preset, 48 px;
``--full``: resnet50 at 224 px), briefly trained on the demo's synthetic whales
(``--train-epochs``; the timing does not depend on how well). Both attacks are fitted as
``cli.py discriminate`` fits them (:func:`experiments.commands.discriminate.fit_attack`: the registry's
``yeom`` / ``salem`` fitted on the balanced attack set of the model's signals). Then, on ``--n``
new photos (evaluation-set photos, members and non-members, decoded into one tensor; 64 is
``discriminate``'s batch):

* forward: ``model(x.to(device))`` under ``no_grad``, one batch;
* attack: the path of ``discriminate``: ``extract_arrays`` (the same one batched forward plus
  the signal fields) and ``attack.score`` + the threshold decision.

The three alternate ``--repeats`` times; each keeps its median. Prints the time per sample of
each and the ratio (forward + attack) / forward, goal <= 1.1; the JSON's ``value`` is the worse
of the two attacks. ``details`` also times the same Yeom path with the embedding pass that
``discriminate`` requests for every attack (``embed=model.embed``, needed only by the
nearest-neighbour baseline). Writes ``benchmarks/results/attack_discrimination_vs_forward.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is importable

from attacks.registry import get  # noqa: E402
from attacks.signals import balanced, subset  # noqa: E402
from benchmarks.common import (  # noqa: E402
    add_common_args,
    alternate,
    apply_threads,
    sync,
    write_result,
)
from benchmarks.fit_throughput import (  # noqa: E402
    RawLoop,
    demo_settings,
    in_memory,
    make_datamodule,
    make_model,
    quiet_lightning,
)
from lightning_modules.extraction import attach_metadata, extract_arrays  # noqa: E402

ATTACKS = ("yeom", "salem")


def fit_attacks(model, dm, device: str, seed: int = 0) -> dict:
    """``{name: fitted attack}`` as :func:`experiments.commands.discriminate.fit_attack` fits them: on the
    balanced attack set of the model's signals over every manifest row."""
    rows = dm.signal_rows()
    sig = attach_metadata(extract_arrays(model, dm.signal_loader(rows), device), rows)
    att = balanced(subset(sig, "attack"), seed)
    return {name: get(name)().fit(att) for name in ATTACKS}


def new_photos(dm, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` evaluation-set photos (members and non-members, never used to fit the attacks),
    decoded by the datamodule's evaluation transform into one tensor."""
    rows = dm.rows("eval") or dm.rows()
    rng = np.random.default_rng(seed)
    pick = [rows[i] for i in rng.choice(len(rows), size=min(n, len(rows)), replace=False)]
    xs = torch.cat([x for x, _, _ in dm.signal_loader(pick)])
    if len(xs) < n:  # fewer evaluation photos than asked: repeat them
        xs = xs.repeat((n + len(xs) - 1) // len(xs), 1, 1, 1)[:n]
    return xs


def timed_cases(model, attacks: dict, batch: list, device: str) -> dict:
    """What is timed, by name: the bare forward of the batch's photos, then each attack's
    signal extraction + scoring + decision (``yeom_with_embedding``: with the embedding pass
    that ``discriminate`` adds)."""
    x = batch[0][0]

    @torch.no_grad()
    def forward() -> None:
        model(x.to(device, non_blocking=True))
        sync(device)

    def attack(name: str, embed=None):
        def go() -> None:
            sig = extract_arrays(model, batch, device, embed=embed)
            scores = attacks[name].score(sig)
            _ = scores >= attacks[name].score_threshold

        return go

    cases = {"forward": forward, **{name: attack(name) for name in ATTACKS}}
    cases["yeom_with_embedding"] = attack("yeom", embed=model.embed)
    return cases


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="photos in the one batch (64)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (15; --full: 5)")
    ap.add_argument("--train-epochs", type=int, default=None, help="target training (5; full 1)")
    ap.add_argument("--data-dir", default=str(ROOT / "data_cache"), help="synthetic catalog cache")
    add_common_args(ap)
    a = ap.parse_args(argv)
    repeats = a.repeats or (5 if a.full else 15)
    train_epochs = a.train_epochs if a.train_epochs is not None else (1 if a.full else 5)
    threads = apply_threads(a.threads)
    quiet_lightning()
    device = a.device
    data_args, model_args = demo_settings(a.full)
    pl.seed_everything(0, verbose=False)
    dm = make_datamodule(data_args, a.data_dir)
    model = make_model(model_args, dm.num_classes)
    x_train, y_train = in_memory(dm)
    loop = RawLoop(model, x_train, y_train, dm.batch_size, device)
    for _ in range(train_epochs):
        loop.epoch()
    model.eval()
    t0 = time.perf_counter()
    attacks = fit_attacks(model, dm, device)
    t_fit = time.perf_counter() - t0
    x = new_photos(dm, a.n)
    n = len(x)
    batch = [(x, torch.full((n,), -1), torch.arange(n))]  # new photos: no label

    times, _ = alternate(timed_cases(model, attacks, batch, device), repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = {k: med[k] / med["forward"] for k in times if k != "forward"}
    value = max(ratio[k] for k in ATTACKS)
    per_ms = {k: med[k] / n * 1e3 for k in times}
    print(
        f"{model_args['arch']} {data_args['loader']['image_size']} px, one batch of {n} photos: forward "
        f"{per_ms['forward']:.3f} ms/sample; "
        + ", ".join(f"{k} {per_ms[k]:.3f} ms/sample ({ratio[k]:.3f}x)" for k in ATTACKS)
        + f"; goal <= 1.1x. (discriminate's extra embedding pass: {ratio['yeom_with_embedding']:.2f}x)"
    )
    details = {
        "value_is": "max over yeom and salem of (forward + attack) / forward",
        "ratio": ratio,
        "ms_per_sample": per_ms,
        "seconds_median": med,
        "seconds_all": times,
        "thresholds": {k: float(v.score_threshold) for k, v in attacks.items()},
        "attack_fit_s": t_fit,
        "arch": model_args["arch"],
        "image_size": data_args["loader"]["image_size"],
        "batch": n,
        "repeats": repeats,
        "train_epochs": train_epochs,
        "full": a.full,
    }
    return write_result(
        "attack_discrimination_vs_forward",
        value,
        "x ((forward + attack scoring) per sample / forward per sample; worse of yeom, salem)",
        "<= 1.1",
        details,
        argv,
        a.out,
        threads=threads,
        device=device,
    )


if __name__ == "__main__":
    main()
