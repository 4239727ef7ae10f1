"""The ``reference:`` step of ``cli.py attack``: the known/new score of a photo calibrated against
reference whales outside the target's catalog (:mod:`attacks.reference_calibrated`).

The reference photos (a Where's Whale-do catalog, or the reference rows of an embedding run's
population) are embedded by the target itself, as ``signals/final.npz`` holds its ``embedding``
(the same model call, on the run's evaluation transform); the attack is then fitted on the
target's attack set and evaluated on its evaluation set, like the baselines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from datamodules.errors import DataError
from experiments.run.folder import RunContext

if TYPE_CHECKING:
    from experiments.attack_steps.jobs import Inputs, Job
    from experiments.settings.attack import AttackSettings, ReferenceSettings

#: reference photos per forward pass
BATCH = 64


@dataclass
class ReferencePhotos:
    """Reference photos: ``files`` (P,) relative to ``root``, their whale ``identity`` (P,);
    ``option`` and ``source`` name the setting and the folder they came from."""

    option: str
    source: str
    root: Path
    files: list[str]
    identity: np.ndarray


def target_viewpoint(ctx: RunContext) -> str | None:
    """The viewpoint the target's reader keeps (``data.reader.init_args.viewpoint``), or None."""
    reader = ctx.data_args.get("reader")
    return (reader.get("init_args") or {}).get("viewpoint") if isinstance(reader, dict) else None


def _catalog_photos(s: ReferenceSettings, viewpoint: str | None) -> ReferencePhotos:
    """Every reference photo of the settings' ``root`` (of ``viewpoint`` only, when set) or
    ``embedding_run``."""
    if s.root is not None:
        from datamodules.catalogs import NoaaReader

        root = Path(s.root).expanduser()
        if not (root / "metadata.csv").is_file():
            raise DataError(
                f"reference.root {root}: no metadata.csv. Pass a Where's Whale-do catalog folder "
                "of reference whales."
            )
        records = NoaaReader(viewpoint).read(root).records
        ident = np.asarray([r.identity for r in records], dtype=str)
        return ReferencePhotos("reference.root", str(root), root, [r.file for r in records], ident)
    from experiments.run.embedding_folder import EmbeddingRun

    run = EmbeddingRun.open(s.embedding_run)
    rows = [r for r in run.population if r["role"] == "reference"]
    if not rows:
        raise DataError(
            f"reference.embedding_run {run.folder}: its population holds no reference whales "
            "(role reference). Pass a run fitted with holdout_individuals, or use reference.root."
        )
    ident = np.asarray([r["identity"] for r in rows], dtype=str)
    files = [r["file"] for r in rows]
    return ReferencePhotos(
        "reference.embedding_run", str(run.folder), run.population_root, files, ident
    )


def reference_photos(ctx: RunContext, s: ReferenceSettings) -> ReferencePhotos:
    """The reference photos of ``s`` (from ``root``: the target's viewpoint only), at most
    ``s.max_photos`` (seeded subsample, file order kept); refuses whales that are also in the
    target's split manifest."""
    photos = _catalog_photos(s, target_viewpoint(ctx))
    shared = sorted(set(photos.identity) & {r["identity"] for r in ctx.rows})
    if shared:
        raise DataError(
            f"{photos.option} {photos.source}: {len(shared)} whale id(s) also in the target's "
            f"split manifest (e.g. {', '.join(shared[:3])}); pass a catalog of other whales."
        )
    n = len(photos.files)
    if n <= s.max_photos:
        return photos
    keep = np.sort(np.random.default_rng(s.seed).choice(n, s.max_photos, replace=False))
    files = [photos.files[i] for i in keep]
    return replace(photos, files=files, identity=photos.identity[keep])


def check_reference(ctx: RunContext, s: AttackSettings) -> None:
    """Refuse, before anything is written, a reference block the run cannot serve: reference
    photos that are missing or share whales with the target, or a target checkpoint that is
    gone (the references are embedded by the target)."""
    if not s.reference.enabled:
        return
    if not ctx.checkpoint.is_file():
        raise DataError(
            f"{ctx.checkpoint}: checkpoint missing, and reference.enabled embeds the reference "
            "whales with the target. Restore it, or pass --reference.enabled false."
        )
    reference_photos(ctx, s.reference)


def embed_photos(ctx: RunContext, root: Path, files: list[str]) -> np.ndarray:
    """Target embeddings (P, D) float32 of photos ``root/files``: the run's evaluation
    transform and the model call that fills the signals' ``embedding``, in batches of
    :data:`BATCH`."""
    from torch.utils.data import DataLoader

    from datamodules.images import ManifestDataset
    from lightning_modules.extraction import extract_arrays

    rows = [{"catalog": "reference", "file": f, "aug": "", "label": -1} for f in files]
    ds = ManifestDataset(rows, {"reference": root}, ctx.transform())
    loader = DataLoader(ds, batch_size=BATCH, shuffle=False, num_workers=0)
    model = ctx.model()
    arrays = extract_arrays(model, loader, ctx.device, embed=getattr(model, "embed", None))
    return np.asarray(arrays["embedding"], dtype=np.float32)


def reference_jobs(inp: Inputs) -> list[Job]:
    """One ``reference_calibrated`` job (the settings' ``statistic``): the reference whales
    embedded by the target; fitted on the target's attack set, scored on its evaluation set."""
    from experiments.attack_steps.jobs import target_job

    s = inp.settings.reference
    if not s.enabled:
        return []
    if "embedding" not in inp.sig:
        raise DataError(
            f"{inp.common['signals']}: no embedding field, which reference.enabled needs. "
            "Delete the file to re-extract it from the checkpoint."
        )
    t0 = time.perf_counter()
    photos = reference_photos(inp.ctx, s)
    emb = embed_photos(inp.ctx, photos.root, photos.files)
    seconds = time.perf_counter() - t0
    inp.log(f"reference whales: {len(emb)} photos embedded in {seconds:.1f} s")
    args = {"reference": emb, "reference_identity": photos.identity, "statistic": s.statistic}
    info = {
        "score": f"best catalog cosine calibrated against reference whales ({s.statistic})",
        "statistic": s.statistic,
        "reference_source": photos.source,
        "n_reference_photos": len(emb),
        "n_reference_identities": len(np.unique(photos.identity)),
        "reference_embed_seconds": seconds,
        "references_seconds_this_call": seconds,  # the report's cost table
    }
    name = f"reference_calibrated_{s.statistic}"
    job = target_job(inp, name, "reference_calibrated", args, info)
    job.prep_seconds = seconds  # embedding the references is the attack's training cost
    return [job]
