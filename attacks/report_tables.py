"""The report's Markdown tables (``tabulate``, GitHub format), each cell a number a reader can
cite: ``n/a`` with the count behind it where the evaluation set cannot support a figure, a
footnote mark on each number a warning concerns, below-chance AUCs said so, no ``nan``.

Rules (:func:`tpr_cell`): a TPR at FPR ``f`` needs at least ``ceil(1 / f)`` non-members (one
false positive within the budget), so TPR at 0.1% FPR is ``n/a`` below 1,000 non-members and
TPR at 1% FPR below 100; above that, a figure whose budget allows fewer than 10 false positives
is printed with a mark ("coarse"). An AUC below 0.5 is printed "below chance" with a mark whose
footnote says whether its 95% interval excludes 0.5.
"""

from __future__ import annotations

import math

from tabulate import tabulate

#: metrics shown in the "all metrics" table, in order
SHOWN = (
    "acc",
    "balanced_acc",
    "precision",
    "tpr",
    "fpr",
    "auc",
    "advantage",
    "tpr@1%fpr",
    "tpr@0.1%fpr",
    "baks",
    "baus",
    "gmean",
    "auroc_new",
)

#: the TPR-at-low-FPR columns: (metric key, FPR label, rate)
LOW_FPR_KEYS = (("tpr@1%fpr", "1%", 0.01), ("tpr@0.1%fpr", "0.1%", 0.001))

_MARKS = "¹²³⁴⁵⁶⁷⁸⁹"


def github(rows: list, headers: list) -> str:
    """A Markdown table in GitHub format, numbers already formatted (kept as text)."""
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def missing(v) -> bool:
    """True for None and NaN."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v) -> str:
    """A number as the tables print it (3 decimals); ``n/a`` for None/NaN."""
    if missing(v):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


class Notes:
    """Footnotes of one table: each text gets one mark; each use records who it concerns."""

    def __init__(self):
        self.who: dict[str, list[str]] = {}

    def mark(self, text: str, who: str) -> str:
        """The mark of ``text`` (``¹``, ``²``, ...), recording ``who`` (e.g. the attack)."""
        names = self.who.setdefault(text, [])
        if who not in names:
            names.append(who)
        k = list(self.who).index(text)
        return _MARKS[k] if k < len(_MARKS) else f"[{k + 1}]"

    def lines(self) -> list[str]:
        """One line per footnote: its mark, its text and whom it concerns."""
        return [
            f"{self.mark(text, who[0])} {text} ({'; '.join(who)})" for text, who in self.who.items()
        ]

    def block(self) -> str:
        return "\n".join(f"{line}  " for line in self.lines())


def tpr_cell(m: dict, key: str, notes: Notes, name: str, value=None) -> str:
    """The ``tpr@<f>fpr`` cell of attack ``name`` with metrics ``m``: ``n/a`` with the
    non-member count when there are fewer than ``1 / f``, a "coarse" mark when the FPR budget
    allows fewer than 10 false positives. ``value``: the text to print (default the point)."""
    label, rate = next((lb, r) for k, lb, r in LOW_FPR_KEYS if k == key)
    n_neg = m.get("n_nonmembers")
    need = math.ceil(1 / rate - 1e-9)
    if n_neg is not None and n_neg < need:
        text = (
            f"TPR at {label} FPR needs at least {need:,} non-members (one false positive "
            "within the budget); n = the non-members evaluated"
        )
        return f"n/a{notes.mark(text, name)} (n={n_neg:,})"
    v = m.get(key) if value is None else value
    if missing(v):
        return "n/a"
    cell = v if isinstance(v, str) else fmt(v)
    n_fp = m.get(f"{key}_n_fp")
    if n_fp is not None and m.get(f"{key}_reliable") is False:
        text = (
            f"coarse: TPR at {label} FPR rests on fewer than 10 false positives within the FPR "
            "budget"
        )
        cell += notes.mark(text, f"{name}: {n_fp} of {n_neg:,} non-members")
    return cell


def auc_cell(v, notes: Notes, name: str, ci: tuple | None = None) -> str:
    """An AUC cell (with its 95% interval when ``ci`` = (point, lo, hi)); below 0.5 it reads
    "below chance" with a mark saying whether the interval excludes 0.5."""
    if missing(v):
        return "n/a"
    cell = fmt(v) if ci is None else interval(ci)
    if v < 0.5:
        hi = None if ci is None else ci[2]
        if not missing(hi) and hi < 0.5:
            text = "below chance (the 95% interval lies below 0.5)"
        elif not missing(hi):
            text = "below 0.5, though the 95% interval includes 0.5"
        else:
            text = "below chance (AUC < 0.5)"
        text += (
            "; the attack ranks non-members above members here; its direction, fitted on the "
            "attack set, does not transfer. This is an attack failure, not evidence of privacy"
        )
        cell += f" below chance{notes.mark(text, name)}"
    return cell


def interval(t) -> str:
    """``point [lo, hi]`` of a ``(point, lo, hi)`` triple."""
    p, lo, hi = t
    if missing(p):
        return "n/a"
    return f"{p:.3f}" + (
        " [no interval]" if missing(lo) or missing(hi) else f" [{lo:.3f}, {hi:.3f}]"
    )


def metrics_table(rows: dict[str, dict], keys=SHOWN) -> str:
    """Markdown: one row per attack, one column per metric of ``keys`` (columns without a value
    for any attack are left out, in one line under the table), then the footnotes."""
    notes = Notes()
    kept = [k for k in keys if any(not missing(m.get(k)) for m in rows.values())]
    dropped = [k for k in keys if k not in kept]
    body = []
    for name, m in rows.items():
        cells = []
        for k in kept:
            if k.startswith("tpr@") and k.endswith("fpr"):
                cells.append(tpr_cell(m, k, notes, name))
            elif k == "auc":
                cells.append(auc_cell(m.get(k), notes, name))
            else:
                cells.append(fmt(m.get(k)))
        body.append([name, *cells])
    out = [github(body, ["attack", *kept])]
    if dropped:
        out.append(
            f"\nLeft out, no attack has a value: {', '.join(dropped)} (the open-set columns "
            "need the target's predictions on the evaluated photos)."
        )
    if notes.who:
        out.append("\n" + notes.block())
    return "\n".join(out)


def figure6_table(results: dict[str, dict[str, dict]], cis: dict | None = None) -> str:
    """Figure-6-style headline: rows = attacks, columns = architectures, cells accuracy / FPR /
    AUC, each with its 95% bootstrap interval by individual where ``cis[arch][attack]`` holds
    ``acc``, ``fpr``, ``auc`` triples (runs from ``--compare`` without them: points only).

    ``results[arch][attack] = metrics``."""
    notes = Notes()
    archs = list(results)
    attacks = list(dict.fromkeys(a for r in results.values() for a in r))
    body = []
    for att in attacks:
        cells = []
        for arch in archs:
            m = results[arch].get(att)
            ci = ((cis or {}).get(arch) or {}).get(att)
            if m is None:
                cells.append("-")
            elif ci:
                auc = auc_cell(m["auc"], notes, att, ci["auc"])
                cells.append(f"{interval(ci['acc'])} / {interval(ci['fpr'])} / {auc}")
            else:
                cells.append(
                    f"{fmt(m['acc'])} / {fmt(m['fpr'])} / {auc_cell(m['auc'], notes, att)}"
                )
        body.append([att, *cells])
    table = github(body, ["attack", *(f"{a}: acc / FPR / AUC" for a in archs)])
    return table + ("\n\n" + notes.block() if notes.who else "")


def ci_table(results: dict[str, dict], cis: dict[str, dict]) -> str:
    """Markdown: AUC, TPR at 1% and 0.1% FPR and balanced accuracy with their 95% bootstrap
    intervals by individual (:func:`attacks.metric_intervals.ci_summary` results in ``cis``), the
    counts behind them; TPR cells follow :func:`tpr_cell`."""
    notes = Notes()
    body = []
    for name, r in cis.items():
        m = {**results.get(name, {}), "n_nonmembers": r["n_nonmembers"]}
        tprs = [tpr_cell(m, k, notes, name, interval(r[k])) for k, _, _ in LOW_FPR_KEYS]
        body.append(
            [
                name,
                auc_cell(r["auc"][0], notes, name, r["auc"]),
                *tprs,
                interval(r["balanced_acc"]),
                f"{r['n_members']} / {r['n_nonmembers']} ({r['n_individuals']})",
                f"{r['min_fpr']:.4f}",
            ]
        )
    head = ["attack", "AUC", "TPR@1%FPR", "TPR@0.1%FPR", "balanced acc"]
    head += ["members / non-members (individuals)", "min FPR"]
    return github(body, head) + ("\n\n" + notes.block() if notes.who else "")


def _secs(v) -> str:
    return "n/a" if missing(v) else f"{v:.2f}"


def cost_table(results: dict[str, dict], infos: dict[str, dict]) -> str:
    """Markdown: the one cost table (Table 4 style). Training = preparation + attack fit, both
    from each attack's info (``train_seconds``, ``fit_seconds``), so the columns add up;
    discrimination per sample includes producing the signal (forward pass or queries)."""
    refs = any(i.get("n_references") for i in infos.values())
    head = ["attack", "training (s)", "preparation (s)", "attack fit (s)"]
    head += ["references", "this call: references ready (s)"] if refs else []
    head += ["discrimination per sample (ms)", "n eval"]
    body = []
    for name, i in infos.items():
        train, fit = i.get("train_seconds"), i.get("fit_seconds")
        prep = train - fit if not (missing(train) or missing(fit)) else None
        row = [name, _secs(train), _secs(prep), _secs(fit)]
        if refs:
            row += [str(i.get("n_references", 0)), _secs(i.get("references_seconds_this_call"))]
        per = i.get("discrimination_seconds_per_sample")
        m = results.get(name, {})
        n = m.get("n_members", 0) + m.get("n_nonmembers", 0)
        body.append([*row, "n/a" if missing(per) else f"{1000 * per:.3f}", str(n)])
    return "\n".join(
        [
            github(body, head),
            "",
            "Training = preparation + attack fit. Preparation is what the fit set costs before "
            "the attack sees it: a shadow model's training (`salem_shadow`), the boundary "
            "queries on the attack set (`label_only`), the reference models' training (LiRA, "
            "RMIA: the references each uses, trained now or earlier and cached); the ensemble's "
            "subset targets and their attacks count as its fit. Discrimination per sample "
            "includes the target's forward pass (signal attacks) or the HopSkipJump queries "
            "(label-only).",
        ]
    )


#: the encounter table's AUC columns: (key, header, why a column can be empty)
ENCOUNTER_COLUMNS = (
    ("auc_photos", "AUC all photos", "no evaluation photo"),
    (
        "auc_seen_encounter",
        "AUC seen-encounter members",
        "no member test photo comes from an encounter that also gave training photos (the "
        "`group` protocol holds whole encounters out)",
    ),
    ("auc_new_encounter", "AUC new-encounter members", "no encounter was held out whole"),
    (
        "auc_encounter_level",
        "AUC per encounter (new encounters)",
        "no held-out member encounter to compare with the non-member encounters",
    ),
)


def encounter_table(rows: dict[str, dict]) -> str:
    """Markdown: per attack, AUC on all evaluation photos beside AUC with only the member photos
    of encounters seen in training, only those of held-out encounters, and per encounter
    (``experiments.attack_steps.results.encounter_figures``); a column no attack has is left out with one line
    saying why; empty when no attack has these figures."""
    rows = {k: v for k, v in rows.items() if v}
    if not rows:
        return ""
    any_row = next(iter(rows.values()))
    cols = [c for c in ENCOUNTER_COLUMNS if any(not missing(m.get(c[0])) for m in rows.values())]
    gone = [c for c in ENCOUNTER_COLUMNS if c not in cols]
    body = [[name, *(fmt(m.get(k)) for k, _, _ in cols)] for name, m in rows.items()]
    lines = [
        "## Photo split and encounter-grouped figures",
        "",
        f"Member test photos: {any_row['n_seen_encounter_photos']} from encounters that also "
        f"gave training photos, {any_row['n_new_encounter_photos']} from encounters held out "
        f"whole; {any_row['n_nonmember_photos']} photos of new individuals. A photo split "
        "measures the first kind (a near-duplicate of a training photo is easy to recognise); "
        "an ecologist meets the second: a known whale seen again on a new day. AUCs over all "
        "evaluation rows (not subsampled).",
        "",
        github(body, ["attack", *(h for _, h, _ in cols)]),
    ]
    for _, head, why in gone:
        lines += ["", f"Left out: {head}, because {why}."]
    return "\n".join(lines)
