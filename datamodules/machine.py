"""What the datamodules take from the machine: loader workers, and the versions a result
depends on."""

from __future__ import annotations

import os
import platform


def default_workers() -> int:
    """Loader workers: none on a 2-core box (spawning costs more than decoding tiny images), else
    min(8, cores - 1)."""
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(8, cpus - 1)


def environment_versions() -> dict:
    """Versions a result depends on (saved in manifest headers and run folders)."""
    import pytorch_lightning
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "platform": platform.platform(),
    }
