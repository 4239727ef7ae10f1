"""Measuring the stages of the scale benchmark (:mod:`benchmarks.scale`): wall and CPU time, peak
resident memory, garbage collections, the growth exponent between catalog sizes and the table.

Growth exponent of a stage between two sizes: ``log(t2 / t1) / log(u2 / u1)``, with ``u`` the
stage's unit count (``units``: photos, samples or pairs). A stage whose work is set by the size of
the classifier's output as well records ``work_units``, the count of what it handles: logit cells
(rows x classes: a softmax over the catalog's whales gives every scored photo one logit per
known whale, so the cells grow with photos x catalog) or photo pairs (attack set x gallery).
Such a stage is judged by its exponent in ``work_units``, its inputs; the photo exponent stays
in the table beside it. A CPU-time exponent above :data:`SUPERLINEAR` on a stage that takes at
least :data:`MIN_SECONDS` CPU seconds is flagged as super-linear.
"""

from __future__ import annotations

import gc
import math
import resource
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

#: exponents above this on stages of at least MIN_SECONDS are flagged
SUPERLINEAR = 1.15
MIN_SECONDS = 1.0


# ---- measuring ---------------------------------------------------------------------------
def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); False where impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size in MiB: ``VmHWM`` (Linux) or ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class GcClock:
    """Collections of Python's cyclic garbage collector and their CPU seconds, per generation,
    counted through ``gc.callbacks``."""

    def __init__(self):
        self.count, self.seconds, self._t0 = [0, 0, 0], [0.0, 0.0, 0.0], 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.process_time()
        else:
            self.count[info["generation"]] += 1
            self.seconds[info["generation"]] += time.process_time() - self._t0

    def snapshot(self) -> tuple[list[int], list[float]]:
        return list(self.count), list(self.seconds)


#: one clock for the process (a callback per Meter would pile up)
GC_CLOCK = GcClock()


class Meter:
    """Times stages and records their peak memory and garbage collections into ``stages``."""

    def __init__(self, trace: bool):
        self.trace = trace
        self.stages: dict[str, dict] = {}
        self.gc = GC_CLOCK
        self.rss_method = "VmHWM reset per stage" if reset_peak_rss() else "ru_maxrss (monotonic)"

    @contextmanager
    def stage(self, name: str, units: float | None = None):
        """Record ``name``: seconds, peak RSS and (with tracing) peak Python memory in MiB."""
        reset_peak_rss()
        if self.trace:
            tracemalloc.reset_peak()
        rec = {"units": units}
        gc.collect()  # untimed: no stage pays a full collection for what earlier ones left
        n0, s0 = self.gc.snapshot()
        t0, c0 = time.perf_counter(), time.process_time()
        yield rec
        rec["seconds"] = time.perf_counter() - t0
        rec["cpu_seconds"] = time.process_time() - c0
        n1, s1 = self.gc.snapshot()
        rec["gc_collections"] = [b - a for a, b in zip(n0, n1)]  # generations 0, 1, 2
        rec["gc_cpu_seconds"] = sum(s1) - sum(s0)
        rec["peak_rss_mb"] = peak_rss_mb()
        if self.trace:
            rec["python_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        self.stages[name] = rec
        print(
            f"  {name:28s} {rec['seconds']:8.2f} s  cpu {rec['cpu_seconds']:8.2f} s  "
            f"rss {rec['peak_rss_mb']:7.0f} MiB  gc {rec['gc_collections']} "
            f"{rec['gc_cpu_seconds']:.2f} s",
            flush=True,
        )


# ---- growth and the table ----------------------------------------------------------------
def exponent(s1: dict, s2: dict, u1: float, u2: float, key: str = "seconds") -> float | None:
    """``log(t2 / t1) / log(u2 / u1)`` of the times ``key`` (None when undefined)."""
    t1, t2 = s1.get(key), s2.get(key)
    if not t1 or not t2 or t1 <= 0 or t2 <= 0 or not u1 or not u2 or u1 == u2:
        return None
    return math.log(t2 / t1) / math.log(u2 / u1)


def growth(
    sizes: list[dict], key: str = "seconds", unit: str = "units"
) -> dict[str, list[float | None]]:
    """Per stage, the exponents of the times ``key`` (wall ``seconds`` or ``cpu_seconds``)
    between consecutive sizes by each stage's ``unit`` count (``units``; the per-photo
    discriminate time and the discriminate fixed part by the catalog's photos), or by its
    ``work_units`` (None for a stage without them)."""
    out: dict[str, list[float | None]] = {}
    for name in sizes[0]["stages"]:
        exps = []
        for r1, r2 in zip(sizes, sizes[1:]):
            s1, s2 = r1["stages"].get(name), r2["stages"].get(name)
            if s1 is None or s2 is None:
                exps.append(None)
                continue
            u1, u2 = s1.get(unit), s2.get(unit)
            if unit == "units" and (name.startswith("discriminate") or not u1 or u1 == u2):
                u1, u2 = r1["photos"], r2["photos"]
            exps.append(exponent(s1, s2, u1, u2, key))
        out[name] = exps
    return out


def judged(exps: dict, work_exps: dict) -> dict[str, list[float | None]]:
    """Each stage's exponents in its inputs: by ``work_units`` where the stage has them, else by
    ``units``."""
    return {
        name: [w if w is not None else e for e, w in zip(es, work_exps.get(name, [None] * len(es)))]
        for name, es in exps.items()
    }


def flagged(sizes: list[dict], exps: dict, key: str = "cpu_seconds") -> list[str]:
    """Stages whose exponent (of the times ``key``; pass :func:`judged` exponents) exceeds
    SUPERLINEAR where the larger size took at least MIN_SECONDS."""
    bad = []
    for name, es in exps.items():
        if name.startswith("setup") or name == "fit_total":
            continue
        for k, e in enumerate(es):
            t2 = sizes[k + 1]["stages"][name].get(key) or 0.0
            if e is not None and e > SUPERLINEAR and t2 >= MIN_SECONDS:
                bad.append(
                    f"{name} ({sizes[k]['individuals']}->{sizes[k + 1]['individuals']}: {e:.2f})"
                )
    return bad


def stage_cell(st: dict | None) -> str:
    if st is None:
        return "-"
    scale, unit = (1e3, "ms") if st.get("per_photo") else (1.0, "s")
    cpu = st.get("cpu_seconds")
    t = f"{st['seconds'] * scale:.2f} {unit}"
    if cpu is not None:
        t += f" (cpu {cpu * scale:.2f})"
    return f"{t}, {st['peak_rss_mb']:.0f} MiB"


def markdown(
    sizes: list[dict], exps: dict, cpu_exps: dict | None = None, work_exps: dict | None = None
) -> str:
    """Stage x size table: wall seconds (CPU seconds), peak RSS (MiB); exponents wall / CPU by
    photos, then ``[CPU by work units]`` where the stage has them (``work_exps``)."""
    head = ["stage", *[f"{r['individuals']} ind. ({r['photos']} photos)" for r in sizes]]
    head += [f"exp. {a['individuals']}->{b['individuals']}" for a, b in zip(sizes, sizes[1:])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, es in exps.items():
        cells = [name, *[stage_cell(r["stages"].get(name)) for r in sizes]]
        ces = (cpu_exps or {}).get(name, [None] * len(es))
        wes = (work_exps or {}).get(name, [None] * len(es))
        for e, c, w in zip(es, ces, wes):
            text = "-" if e is None else f"{e:.2f}"
            text = text if c is None else f"{text} / {c:.2f}"
            cells.append(text if w is None else f"{text} [{w:.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
