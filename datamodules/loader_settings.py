"""How :class:`datamodules.whale.WhaleDataModule` turns photos into batches
(``data.loader``): image size and resize, batch sizes and sampler, workers, augmentation, the
decoded-image cache and the unreadable-image policy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoaderSettings:
    """Images and loaders of :class:`WhaleDataModule`.

    Args:
        image_size: square input size in pixels.
        resize: ``squash`` stretches each photo to the square (its aspect ratio is lost);
            ``letterbox`` scales the longer side to ``image_size`` and pads the rest with
            ``pad_value``, so a 3:1 beluga crop keeps its shape and marks (the whale configs'
            default).
        pad_value: grey level 0-255 of the letterbox padding.
        batch_size: training batch size.
        sampler: order of the training photos: ``shuffle`` (uniform), or ``individuals``: runs of
            ``m_per_individual`` photos of one individual from different encounters where it has
            them (:class:`~datamodules.identity_batches.IndividualEncounterSampler`), so each batch holds
            ``batch_size / m_per_individual`` individuals (for ``model.head: arcface``).
        m_per_individual: photos per individual in a run of the ``individuals`` sampler.
        eval_batch_size: batch size of the evaluation and signal loaders (``None``:
            max(batch_size, 64)).
        num_workers: loader workers (``None``: 0 on <=2 cores, else min(8, cores - 1)). With
            workers, they persist across epochs and each keeps 4 training batches (2 evaluation
            batches) in flight. Memory is pinned only when the trainer runs on CUDA.
        train_augment: random crop/flip/colour jitter during training (off in the paper presets),
            applied to the resized (cached) image.
        augment_on_device: with ``train_augment``, do the random crop/flip/jitter batch-wise on
            the batch's device (the GPU when training there) in ``on_after_batch_transfer``; the
            training loader then ships uint8 images (a quarter of the bytes). Decoding and resizing
            stay in the workers and the cache; only the cheap random part moves. ``false``: per
            sample in the loader workers, on the CPU.
        verify_images: decode-check every image and hash it for the byte-identity leak check.
            Off, each image is hashed on first use instead (for the cache key).
        cache_dir: folder of the decoded-image cache (``null``: off). Each photo is decoded,
            manifest-augmented and resized once and kept as uint8, keyed by the sha256 of the
            file, its manifest augmentation and the resize settings (image size, interpolation,
            antialias, format version): a changed photo or setting gets a new entry, and stale
            entries are never read (delete the folder, or ``datamodules.image_cache.prune``, to
            reclaim space). Safe to share between runs, loader workers and DDP ranks.
        unreadable: what a photo that does not decode does: ``error`` stops with one line naming
            it; ``skip`` leaves such photos out of the catalog before the split is planned (the
            manifest never lists them), warns once and lists them with the reason in
            ``skipped_images.csv`` beside the manifest.
    """

    image_size: int = 224
    resize: str = "squash"
    pad_value: int = 0
    batch_size: int = 32
    sampler: str = "shuffle"
    m_per_individual: int = 4
    eval_batch_size: int | None = None
    num_workers: int | None = None
    train_augment: bool = False
    augment_on_device: bool = True
    verify_images: bool = True
    cache_dir: str | None = "data_cache/decoded"
    unreadable: str = "error"
