"""``python cli.py export --run <run>``: write the run's target as an ONNX graph, so that
``cli.py discriminate`` scores new photos with ONNX Runtime and starts without torch.

The bundle goes to ``<run>/export/`` (:mod:`experiments.target.onnx_engine`): ``target.onnx`` (input
``image`` (B, 3, S, S), outputs ``logits`` (B, C) and ``embedding`` (B, D)) and ``export.json``
(the checkpoint it came from, the input transform, versions, and the check below). The command
also extracts the run's final signals when they are missing (``discriminate`` calibrates on them).

The check, written to ``export.json`` and printed:

* ``graph``: the same input tensors through torch and ONNX Runtime (up to ``--check_photos`` of
  the run's own photos): the largest logit and embedding differences. Above ``1e-3`` times the
  logits' scale the export is refused.
* ``end_to_end``: the same photo files through each engine's own preprocessing (torch's resize
  against PIL's, which round differently by at most one grey level): the largest differences in
  logits, top-class probability and loss, the smallest embedding cosine, and how often the top
  class agrees.

An up-to-date bundle is kept (``--force true`` writes it again); a stale one (another checkpoint)
is replaced, since it is derived from the run and holds nothing else.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from datamodules.errors import DataError
from experiments.run.config_files import add_flag, command_parser, parse_options
from experiments.run.folder import RunContext
from experiments.run.outputs import atomic_path, make_output_dir, write_json
from experiments.target.onnx_engine import (
    FORMAT,
    INFO_FILE,
    MODEL_FILE,
    bundle_dir,
    bundle_info,
    checkpoint_identity,
    run_batches,
    session,
    signals_from_outputs,
    transform_settings,
)

#: largest logit/embedding difference (times max(1, largest |logit|)) an export may have
GRAPH_TOLERANCE = 1e-3


def write_graph(model, size: int, path: Path) -> None:
    """``torch.onnx.export`` of ``model.logits_and_embedding`` for (B, 3, size, size) inputs,
    the batch dimension dynamic, weights inside the file."""
    import torch

    class Outputs(torch.nn.Module):
        def __init__(self, target):
            super().__init__()
            self.target = target

        def forward(self, x):
            return self.target.logits_and_embedding(x)

    example = (torch.zeros(2, 3, size, size),)
    torch.onnx.export(
        Outputs(model).eval(),
        example,
        str(path),
        input_names=["image"],
        output_names=["logits", "embedding"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def photo_file(ctx: RunContext, row: dict) -> Path | None:
    """The photo file of a manifest row (None when its catalog root is unknown)."""
    root = ctx.roots.get(row["catalog"])
    return None if root is None else root / row["file"]


def check_rows(ctx: RunContext, n: int) -> list[dict]:
    """Up to ``n`` manifest rows spread over the manifest, without augmentation and whose photo
    file is present."""
    rows = [r for r in ctx.rows if not r.get("aug") and (photo_file(ctx, r) or Path()).is_file()]
    step = max(1, len(rows) // max(1, n))
    return rows[::step][:n]


def graph_check(model, sess, x) -> dict:
    """Largest differences between torch and ONNX Runtime on the same inputs (B, 3, S, S)."""
    import torch

    with torch.no_grad():
        lt, et = (t.float().cpu().numpy() for t in model.logits_and_embedding(x))
    out = run_batches(sess, [(x.numpy(),)])
    return {
        "inputs": int(len(x)),
        "max_abs_logit": float(np.abs(out["logits"] - lt).max()),
        "max_abs_embedding": float(np.abs(out["embedding"] - et).max()),
        "logit_scale": float(np.abs(lt).max()),
        "torch_outputs": (lt, et),
    }


def end_to_end_check(ctx: RunContext, sess, rows: list[dict], torch_outputs) -> dict:
    """The same photo files through torch's preprocessing (``torch_outputs``) and PIL's (here)."""
    from datamodules.decode import eval_array, load_rgb

    t = transform_settings(ctx)
    paths = [photo_file(ctx, r) for r in rows]
    x = np.stack([eval_array(load_rgb(p), **t) for p in paths])
    ours = run_batches(sess, [(x,)])
    a = signals_from_outputs(*torch_outputs)
    b = signals_from_outputs(ours["logits"], ours["embedding"])
    ea, eb = a["embedding"], b["embedding"]
    cos = (ea * eb).sum(1) / (np.linalg.norm(ea, axis=1) * np.linalg.norm(eb, axis=1) + 1e-12)
    return {
        "photos": len(rows),
        "max_abs_logit": float(np.abs(a["logits"] - b["logits"]).max()),
        "max_abs_max_prob": float(np.abs(a["max_prob"] - b["max_prob"]).max()),
        "max_abs_loss_pred": float(np.abs(a["loss_pred"] - b["loss_pred"]).max()),
        "min_embedding_cosine": float(cos.min()),
        "top1_agreement": float((a["pred"] == b["pred"]).mean()),
    }


def check_export(ctx: RunContext, model, sess, n_photos: int) -> dict:
    """:func:`graph_check` on ``n_photos`` of the run's photos (seeded noise when none is on
    disk) and :func:`end_to_end_check` on the same photos; DataError when the graph differs."""
    import torch

    rows = check_rows(ctx, n_photos)
    if rows:
        x = ctx.images(rows)
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(4, 3, ctx.image_size, ctx.image_size, generator=g)
    graph = graph_check(model, sess, x)
    torch_outputs = graph.pop("torch_outputs")
    limit = GRAPH_TOLERANCE * max(1.0, graph["logit_scale"])
    if max(graph["max_abs_logit"], graph["max_abs_embedding"]) > limit:
        raise DataError(
            f"--run {ctx.folder}: the ONNX graph differs from torch by "
            f"{graph['max_abs_logit']:.3g} in the logits (limit {limit:.3g}); this architecture "
            "cannot be exported faithfully, keep discriminate --engine torch"
        )
    e2e = end_to_end_check(ctx, sess, rows, torch_outputs) if rows else {"photos": 0}
    return {"graph": graph, "end_to_end": e2e}


def versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def export_target(ctx: RunContext, *, check_photos: int = 16) -> dict:
    """Write ``<run>/export/`` for the run's current checkpoint (see the module doc) and return
    its ``export.json``. The final signals are extracted first when missing."""
    from experiments.run.folder import final_signals
    from experiments.target.torch_engine import load_target

    if not ctx.checkpoint.is_file():
        raise DataError(
            f"--run {ctx.folder}: no checkpoint {ctx.checkpoint}; pass a finished fit's folder"
        )
    t0 = time.perf_counter()
    identity = checkpoint_identity(ctx.checkpoint)
    try:
        model = load_target(ctx).cpu().eval()
    except RuntimeError as exc:  # load_state_dict: the weights are another network's
        if "state_dict" not in str(exc):
            raise
        first = " ".join(str(exc).split())[:160]
        raise DataError(
            f"{ctx.checkpoint}: the checkpoint's weights are not those of the run's model "
            f"(model.init_args.arch {ctx.model_args.get('arch')!r}: {first}); put this run's own "
            "checkpoint back or re-run the fit."
        ) from None
    folder = make_output_dir(bundle_dir(ctx.folder))  # a place it cannot write fails here
    final_signals(ctx)  # discriminate calibrates on them; extracted once, with torch
    with atomic_path(folder / MODEL_FILE) as tmp:
        write_graph(model, ctx.image_size, tmp)
        sess = session(tmp)
        check = check_export(ctx, model, sess, check_photos)
    info = {
        "format": FORMAT,
        "model": MODEL_FILE,
        "checkpoint": identity,
        "input": transform_settings(ctx),
        "classes": len(ctx.class_names),
        "embedding_dim": int(sess.get_outputs()[1].shape[1]),
        "outputs": ["logits", "embedding"],
        "check": check,
        "versions": versions(),
        "seconds": time.perf_counter() - t0,
    }
    write_json(folder / INFO_FILE, info)
    return info


def summary_line(info: dict, folder: Path) -> str:
    g, e = info["check"]["graph"], info["check"]["end_to_end"]
    line = (
        f"exported -> {folder / MODEL_FILE} ({info['seconds']:.1f} s); torch vs ONNX Runtime on "
        f"the same {g['inputs']} inputs: logits within {g['max_abs_logit']:.2g}"
    )
    if e.get("photos"):
        line += (
            f"; from the {e['photos']} photo files (each engine's own resize): logits within "
            f"{e['max_abs_logit']:.2g}, top-class probability within {e['max_abs_max_prob']:.2g}, "
            f"top class agrees on {e['top1_agreement']:.0%}"
        )
    return line


def export(run: str | Path, *, check_photos: int = 16, force: bool = False, log=print) -> dict:
    """``cli.py export``: the bundle of ``run``, written unless it is up to date (or ``force``)."""
    if check_photos < 0:
        raise DataError(f"--check_photos {check_photos}: a number of photos >= 0, e.g. 16")
    ctx = RunContext.open(run, "cpu")  # the check compares torch and ONNX Runtime on the CPU
    info, why = bundle_info(ctx)
    if info is not None and not force:
        log(
            f"{bundle_dir(ctx.folder)} is up to date for {ctx.checkpoint} (--force writes it again)"
        )
        return info
    info = export_target(ctx, check_photos=check_photos)
    log(summary_line(info, bundle_dir(ctx.folder)))
    return info


def parser():
    """The ``cli.py export`` argument parser."""
    p = command_parser("export", __doc__)
    p.add_argument("--run", type=str, required=True, help="finished run folder")
    p.add_argument(
        "--check_photos", type=int, default=16, help="run photos compared between torch and ONNX"
    )
    add_flag(p, "force", "write the bundle even if up to date")
    return p


def main(argv: list[str]) -> dict:
    """Entry point of ``python cli.py export``."""
    a = parse_options(parser(), argv)
    return export(a.run, check_photos=a.check_photos, force=a.force)
