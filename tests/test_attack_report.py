"""The run's attack report reads right for a privacy researcher: ``n/a`` (with the count) where
the non-members cannot support a TPR at low FPR, warnings marked on the numbers they concern,
below-chance AUCs flagged, no ``nan``, ROC figures naming exactly the table's attacks (the
ensembles included), one cost table whose columns add up, intervals on the headline, the
most-exposed lists holding members only, the at-chance fit banner; AUC in every ROC legend,
log-log ROC from the smallest measurable FPR, coinciding curves labelled together, one named
warning per attack, one tpr column and Yeom's threshold as a loss."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from attacks.metrics import auc, roc
from attacks.report import (
    SHOWN,
    evaluate,
    fit_health_banner,
    roc_lines,
    same_score_groups,
    write_attack,
    write_summary,
)
from attacks.report_tables import Notes, cost_table, encounter_table, metrics_table, tpr_cell
from experiments.attack_steps.results import intervals, risk_section
from experiments.callbacks.fit_health import read_health

N_MEM, N_NON = 400, 400  # fewer than 1,000 non-members: no TPR at 0.1% FPR


def eval_rows(seed: int = 0) -> dict:
    """400 member and 400 non-member photos of 80 + 80 individuals (5 photos each)."""
    role = np.array(["member"] * N_MEM + ["nonmember"] * N_NON)
    ident = np.array([f"m{i // 5}" for i in range(N_MEM)] + [f"n{i // 5}" for i in range(N_NON)])
    sid = np.array([f"s{i}" for i in range(len(role))])
    return {"role": role, "identity": ident, "sample_id": sid, "file": np.char.add(sid, ".jpg")}


def scores(kind: str, ev: dict, seed: int) -> np.ndarray:
    y = (ev["role"] == "member").astype(float)
    rng = np.random.default_rng(seed)
    if kind == "inverted":  # members score lower: an AUC well below 0.5
        return rng.normal(size=len(y)) - 0.8 * y
    if kind == "vote":  # a hard vote: one operating point
        return (rng.random(len(y)) < 0.3 + 0.4 * y).astype(float)
    return np.round(rng.normal(size=len(y)) + 1.0 * y, 2)


#: (name, kind, level, info): what run_job / the ensemble / calibrated jobs record
ATTACKS = (
    ("yeom", "good", "identity", {"signal": "loss_pred", "fit_seconds": 0.01}),
    ("salem", "inverted", "identity", {"fit_seconds": 2.5}),
    ("label_only", "good", "identity", {"fit_seconds": 0.002, "prep": 17.0}),
    ("ensemble_any", "vote", "identity", {"rule": "any", "fit_seconds": 30.0}),
    ("ensemble_mean_score", "good", "identity", {"rule": "mean_score", "fit_seconds": 30.0}),
    ("sample_lira_offline", "good", "sample", {"n_references": 4, "prep": 8.0}),
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A run's attacks folder written as ``cli.py attack`` writes it, and its report.md."""
    run = tmp_path_factory.mktemp("run")
    out = run / "attacks"
    out.mkdir()
    (run / "fit_health.json").write_text(
        json.dumps({"at_chance": True, "train_accuracy": 0.05, "chance_accuracy": 0.0625})
    )
    ev = eval_rows()
    results, infos, scored = {}, {}, {}
    for i, (name, kind, level, extra) in enumerate(ATTACKS):
        sc = scores(kind, ev, i)
        y = (ev["role"] == "member").astype(int)
        tau = 0.5 if kind == "vote" else float(np.median(sc))
        m, sel = evaluate(sc, y, tau, identity=ev["identity"], name=name)
        fit = extra.get("fit_seconds", 0.1)
        info = {"level": level, **extra, "fit_seconds": fit}
        info["train_seconds"] = fit + extra.get("prep", 0.0)
        info["discrimination_seconds_per_sample"] = 1e-3
        folder = out / "ensemble" / extra["rule"] if "rule" in extra else out / name
        write_attack(folder, name, m, sc[sel], y[sel], info)
        results[name], infos[name] = m, info
        scored[name] = (ev, sc, sel, tau, info)
    cis = intervals(scored, n_boot=100, seed=0)
    extra_md = risk_section(results, scored, cis, out, top=10)
    enc = {"n_seen_encounter_photos": 0, "n_new_encounter_photos": 40, "n_nonmember_photos": 40}
    enc |= {"auc_photos": 0.7, "auc_seen_encounter": float("nan"), "auc_new_encounter": 0.7}
    enc |= {"auc_encounter_level": 0.8}
    extra_md = encounter_table({"yeom": enc}) + "\n\n" + extra_md
    context = {"run": str(run), "arch": "resnet18", "preset": "paper", "split_protocol": "group"}
    context["fit_health"] = read_health(run)  # as cli.py attack's run context carries it
    path = write_summary(out, results, infos, context, extra_md=extra_md, cis=cis)
    return path.read_text(), results, json.loads((out / "summary.json").read_text()), out


def table_after(md: str, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after ``heading``."""
    block = md.split(heading, 1)[1]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    first = block.splitlines().index(lines[0])
    rows = []
    for ln in block.splitlines()[first:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return [r for r in rows if not set("".join(r)) <= set("-: ")]


def test_tpr_at_low_fpr_is_na_with_the_count_below_one_over_fpr(report):
    md, results, _, _ = report
    rows = table_after(md, "## All metrics")
    head = rows[0]
    col01, col1 = head.index("tpr@0.1%fpr"), head.index("tpr@1%fpr")
    for r in rows[1:]:
        assert re.fullmatch(r"n/a[¹²³⁴⁵⁶⁷⁸⁹] \(n=400\)", r[col01]), r
        assert r[col1] != r[col01] and not r[col1].startswith("n/a")  # 400 >= 100: a value
    note = next(ln for ln in md.splitlines() if "needs at least 1,000 non-members" in ln)
    assert note[0] in "¹²³⁴⁵⁶⁷⁸⁹" and "yeom" in note and "salem" in note
    # 400 non-members allow 4 false positives at 1% FPR: the value carries a "coarse" mark
    coarse = next(ln for ln in md.splitlines() if ln[1:].startswith(" coarse: TPR at 1% FPR"))
    assert "yeom: 4 of 400 non-members" in coarse
    assert all(re.fullmatch(r"\d\.\d{3}" + coarse[0], r[col1]) for r in rows[1:])
    # the confidence-interval table follows the same rule
    ci = table_after(md, "## Confidence intervals")
    assert all(r[ci[0].index("TPR@0.1%FPR")].startswith("n/a") for r in ci[1:])
    assert "## Warnings" not in md  # no list of warnings detached from their numbers


def test_no_nan_anywhere_and_empty_columns_left_out_with_a_reason(report):
    md, *_ = report
    assert not re.search(r"\bnan\b", md, flags=re.IGNORECASE)
    assert "AUC seen-encounter members" not in table_after(md, "encounter-grouped")[0]
    assert "Left out: AUC seen-encounter members, because no member test photo" in md
    md = metrics_table({"x": {"acc": 0.5, "baks": float("nan")}, "y": {"acc": 0.6}})
    assert "baks" not in md.splitlines()[0] and "Left out, no attack has a value: " in md
    assert "nan" not in md


def test_below_chance_auc_is_flagged(report):
    md, results, *_ = report
    assert results["salem"]["auc"] < 0.45
    rows = table_after(md, "## All metrics")
    salem = next(r for r in rows if r[0] == "salem")
    assert "below chance" in salem[rows[0].index("auc")]
    head6 = table_after(md, "Figure 6 style")
    assert "below chance" in next(r for r in head6 if r[0] == "salem")[1]
    assert any("the 95% interval lies below 0.5" in ln and "salem" in ln for ln in md.splitlines())
    yeom = next(r for r in rows if r[0] == "yeom")
    assert "below chance" not in yeom[rows[0].index("auc")]


def test_roc_figures_draw_every_attack_of_the_tables(report):
    md, results, summary, out = report
    figs = summary["figures"]
    assert set(figs) == {"identity", "sample"}
    drawn = [a for f in figs.values() for a in f["attacks"]]
    assert sorted(drawn) == sorted(results)  # every table attack, ensembles included, once
    table = [r[0] for r in table_after(md, "## All metrics")[1:]]
    assert sorted(table) == sorted(drawn)
    assert figs["identity"]["points"] == ["ensemble_any"]  # a hard vote: one operating point
    assert "Drawn as one point" in md and "ensemble_any" in md.split("## ROC curves")[1]
    for f in figs.values():
        assert not f["missing"]
        for png in f["files"]:
            assert (out / png).is_file() and f"]({png})" in md
    assert figs["sample"]["files"] == ["roc_sample.png", "roc_sample_loglog.png"]


def test_one_cost_table_whose_columns_add_up(report):
    md, *_ = report
    assert md.count("## Cost") == 1 and "## Time" not in md
    rows = table_after(md, "## Cost")
    head = rows[0]
    lo = next(r for r in rows if r[0] == "label_only")
    train, prep, fit = (
        float(lo[head.index(c)]) for c in ("training (s)", "preparation (s)", "attack fit (s)")
    )
    assert (train, prep, fit) == (17.0, 17.0, 0.0)  # the queries are its training cost
    for r in rows[1:]:
        t, p, f = (
            float(r[head.index(c)]) for c in ("training (s)", "preparation (s)", "attack fit (s)")
        )
        assert t == pytest.approx(p + f, abs=0.011)


def test_headline_has_intervals_and_the_banner_comes_first(report):
    md, *_ = report
    assert md.splitlines()[0].startswith("> **Warning: the target ended at chance level")
    assert "training accuracy 0.050, chance 0.062" in md.splitlines()[0]
    rows = table_after(md, "Figure 6 style")
    cell = re.compile(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]")
    for r in rows[1:]:
        acc, fpr, auc = r[1].split(" / ")
        assert cell.fullmatch(acc) and cell.fullmatch(fpr) and cell.match(auc), r


def test_most_exposed_lists_rank_members_only(report):
    md, *_ = report
    section = md.split("## Most exposed members, and false alarms", 1)[1]
    parts = re.split(r"\*\*([^*]+)\*\*", section)  # [text, heading, body, heading, body, ...]
    seen = {"members": 0, "alarms": 0}
    for heading, body in zip(parts[1::2], parts[2::2]):
        rows = [ln.split("|")[1:-1] for ln in body.split("\n\n", 2)[1].splitlines()[2:]]
        if "most exposed member photos" in heading:
            assert rows and {r[2].strip() for r in rows} == {"member"}, heading
            seen["members"] += 1
        elif "most exposed members" in heading:
            assert rows and all(r[0].strip().startswith("m") for r in rows), heading
        elif "false alarms" in heading:
            assert rows and {r[2].strip() for r in rows} == {"nonmember"}, heading
            seen["alarms"] += 1
    assert seen == {"members": 2, "alarms": 2}  # both levels


def test_tpr_cell_rules():
    notes = Notes()
    m = {"tpr@1%fpr": 0.25, "tpr@1%fpr_n_fp": 0, "tpr@1%fpr_reliable": False, "n_nonmembers": 99}
    assert tpr_cell(m, "tpr@1%fpr", notes, "a") == "n/a¹ (n=99)"
    m = {"tpr@1%fpr": 0.25, "tpr@1%fpr_n_fp": 10, "tpr@1%fpr_reliable": True, "n_nonmembers": 1000}
    assert tpr_cell(m, "tpr@1%fpr", notes, "b") == "0.250"
    m = {"tpr@0.1%fpr": 0.1, "tpr@0.1%fpr_n_fp": 1, "tpr@0.1%fpr_reliable": False}
    assert tpr_cell({**m, "n_nonmembers": 1000}, "tpr@0.1%fpr", notes, "c") == "0.100²"
    assert len(notes.lines()) == 2 and "c: 1 of 1,000 non-members" in notes.lines()[1]
    assert "nan" not in metrics_table({"x": {"acc": float("nan"), "auc": 0.6}})


def test_cost_table_reads_the_same_seconds_as_the_infos():
    infos = {"label_only": {"train_seconds": 17.04, "fit_seconds": 0.004}}
    md = cost_table({"label_only": {"n_members": 5, "n_nonmembers": 5}}, infos)
    row = next(ln for ln in md.splitlines() if ln.startswith("| label_only"))
    assert [c.strip() for c in row.split("|")[1:5]] == ["label_only", "17.04", "17.04", "0.00"]


def test_fit_health_banner(tmp_path):
    assert fit_health_banner(read_health(tmp_path)) == ""
    (tmp_path / "fit_health.json").write_text(json.dumps({"at_chance": False}))
    assert fit_health_banner(read_health(tmp_path)) == ""
    (tmp_path / "fit_health.json").write_text("{not json")
    assert "could not be read" in fit_health_banner(read_health(tmp_path))


def test_roc_lines_label_auc_group_identical_curves_and_stop_at_one_over_n():
    rng = np.random.default_rng(0)
    y = np.array([1] * 40 + [0] * 50)
    s = rng.normal(size=90) + y
    other = rng.normal(size=90) + 2 * y
    curves = {"yeom": roc(s, y), "msp": roc(2 * s + 1, y), "salem": roc(other, y)}
    lines, floor = roc_lines(curves, loglog=False)
    assert [lb.split(" (")[0] for lb, _, _ in lines] == ["yeom = msp", "salem"]
    assert lines[0][0].endswith(f"(AUC {auc(s, y):.3f})") and floor == 0.0
    lines, floor = roc_lines(curves, loglog=True)
    assert floor == pytest.approx(1 / 50)  # 50 non-members: nothing below FPR 0.02 is measurable
    assert all(f.min() >= 1 / 50 - 1e-6 for _, f, _ in lines)


def test_leakage_figure_groups_attacks_with_identical_series():
    rows = [
        {
            "leak/yeom_auc": a,
            "leak/msp_auc": a,
            "leak/yeom_tpr@1%fpr": 0.1,
            "leak/msp_tpr@1%fpr": 0.1,
            "leak/entropy_auc": 0.6,
            "leak/entropy_tpr@1%fpr": 0.0,
        }
        for a in (0.5, 0.7)
    ]
    assert same_score_groups(rows, ("yeom", "yeom_true", "msp", "entropy")) == [
        ["yeom", "msp"],
        ["entropy"],
    ]


def test_warnings_name_their_attack_once_and_yeom_threshold_is_a_loss(tmp_path):
    y = np.array([1] * 30 + [0] * 30)
    loss = np.concatenate([np.linspace(0.1, 1.0, 30), np.linspace(0.8, 3.0, 30)])
    m, sel = evaluate(-loss, y, -0.9, name="yeom")
    assert len(m["warnings"]) == 1 and m["warnings"][0].startswith("attack yeom:")
    assert "recall" not in m and "recall" not in SHOWN and "advantage" in SHOWN
    write_attack(tmp_path, "yeom", m, -loss[sel], y[sel], {"signal": "loss_pred"})
    report = (tmp_path / "report.md").read_text()
    assert "Threshold on the loss `loss_pred`: 0.9 nats" in report
    saved = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert saved["loss_threshold"] == pytest.approx(0.9) and saved["threshold"] == -0.9
