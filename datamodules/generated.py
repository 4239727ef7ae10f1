"""Write a generated dataset once, atomically, keyed by its settings (shared by the generators)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_once(root: str | Path, settings: dict, fill: Callable[[Path], None], what: str) -> Path:
    """Fill a temp folder with ``fill(tmp)`` and rename it to ``root``, unless already there.

    ``root/synthetic.json`` records ``settings``; when it matches, nothing is redone, so repeated
    runs and concurrent DDP ranks share one copy (a rank that loses the rename race keeps the
    winner's). A non-empty ``root`` holding anything else raises FileExistsError.
    """
    root = Path(root)
    marker = root / "synthetic.json"

    def done() -> bool:
        return marker.is_file() and json.loads(marker.read_text()) == settings

    if done():
        return root
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists and is not the {what} for these settings; choose another data.root "
            "or delete the folder."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".generating-", dir=root.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes an owner-only folder; follow the umask
    try:
        fill(tmp)
        (tmp / "synthetic.json").write_text(json.dumps(settings, indent=2))
        try:
            if root.exists():
                root.rmdir()  # an empty folder left by a user; replace it
            os.replace(tmp, root)
        except OSError:
            if not done():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
