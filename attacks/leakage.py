"""Per-epoch leakage summary of one signal file: accuracies, overfitting gap, KL, threshold attack.

Pure numpy over the arrays of :mod:`attacks.signals`; the leakage monitor logs its output.
"""

from __future__ import annotations

import warnings

import numpy as np

from attacks.metrics import histogram_kl, threshold_metrics
from attacks.signals import accuracy, balanced, membership, subset
from attacks.yeom import YeomAttack


def leakage_metrics(signals: dict, *, kl_bins: int = 20, seed: int = 0) -> dict[str, float]:
    """Metrics logged every monitored epoch.

    * ``leak/train_acc``, ``leak/val_acc``, ``leak/test_acc``: eval-mode top-1 accuracy on ID1.
    * ``leak/gap``: overfitting level, train minus test accuracy.
    * ``leak/kl``: KL(members || non-members) of the predicted-label cross-entropy on the
      evaluation set (ID1-test vs ID3), identity level, label-free (see ``histogram_kl``).
    * ``leak/kl_photo``: KL(train || test) of the true-label cross-entropy on ID1 (photo level).
    * ``attack/acc``, ``attack/auc``, ``attack/tpr@1%fpr``, ``attack/fpr``: the Yeom threshold
      attack on ``loss_pred``, threshold chosen on the (balanced) attack set, scored on the
      (balanced) evaluation set.
    """
    out = {
        "leak/train_acc": accuracy(signals, "train"),
        "leak/val_acc": accuracy(signals, "val"),
        "leak/test_acc": accuracy(signals, "test"),
    }
    out["leak/gap"] = out["leak/train_acc"] - out["leak/test_acc"]
    ev = subset(signals, "eval")
    mem = membership(ev).astype(bool)
    out["leak/kl"] = histogram_kl(ev["loss_pred"][mem], ev["loss_pred"][~mem], bins=kl_bins)
    tr = signals["loss_true"][signals["split"] == "train"]
    te = signals["loss_true"][signals["split"] == "test"]
    out["leak/kl_photo"] = histogram_kl(tr, te, bins=kl_bins)
    att = subset(signals, "attack")
    if len(np.unique(membership(att))) < 2 or len(np.unique(membership(ev))) < 2:
        return out
    att, ev = balanced(att, seed), balanced(ev, seed)
    attack = YeomAttack().fit(att)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = threshold_metrics(attack.score(ev), membership(ev), attack.score_threshold)
    out.update(
        {
            "attack/acc": m["acc"],
            "attack/auc": m["auc"],
            "attack/tpr@1%fpr": m["tpr@1%fpr"],
            "attack/fpr": m["fpr"],
        }
    )
    return out
