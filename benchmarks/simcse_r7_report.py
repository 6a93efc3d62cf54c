"""The tables and the plot of claim R7 (`benchmarks.exp_simcse_r7`), from its stored runs.

A run result is keyed ``model|set|method|seed`` and holds ``scores[pooling][variant]`` with
variant ``raw``, ``full`` (whitened at full width) or ``k<K>`` (whitened to K dims), each a dict
of ``spearman`` (x 100), ``alignment`` and ``uniformity``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import save_figure

POOLINGS = ("cls", "pooler", "mean", "first-last-avg")
P_LABEL = {"cls": "P1", "pooler": "P2", "mean": "P3", "first-last-avg": "P4"}


METHODS = (("raw", "raw", "raw"), ("whiten", "raw", "full"), ("whiten-k", "raw", "k"),
           ("simcse-0.1", "simcse-0.1", "raw"), ("simcse-0.3", "simcse-0.3", "raw"),
           ("simcse-0.3+whiten", "simcse-0.3", "full"), ("sup-simcse", "sup-simcse", "raw"))


def cell(done: dict[str, Any], model: str, set_name: str, run_method: str, variant: str,
         pooling: str, metric: str = "spearman") -> list[float]:
    """The values of one table cell over seeds (one value for the untrained rows)."""
    values = []
    for key, r in done.items():
        m, s, method, _ = key.split("|")
        if (m, s, method) != (model, set_name, run_method) or pooling not in r["scores"]:
            continue
        scores = r["scores"][pooling]
        name = f"k{r['k']}" if variant == "k" else variant
        if name in scores:
            values.append(scores[name][metric])
    return values


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def table_rows(done: dict[str, Any], models: Sequence[str], sets: Sequence[Any]
               ) -> list[dict[str, Any]]:
    """One row per (model, method, pooling): Spearman x 100 on each set (mean ± sd over
    seeds), alignment and uniformity on CNSD STS-B."""
    rows = []
    for model in models:
        for label, run_method, variant in METHODS:
            for pooling in POOLINGS:
                row: dict[str, Any] = {"model": model, "method": label,
                                       "pooling": f"{P_LABEL[pooling]} {pooling}"}
                found = False
                for s in sets:
                    values = cell(done, model, s.name, run_method, variant, pooling)
                    found |= bool(values)
                    row[s.name] = mean_sd(values)
                    row[f"{s.name}_values"] = values
                row["seeds"] = max(len(row[f"{s.name}_values"]) for s in sets) \
                    if run_method != "raw" else None
                for metric in ("alignment", "uniformity"):
                    v = cell(done, model, sets[0].name, run_method, variant, pooling, metric)
                    row[metric] = float(np.mean(v)) if v else None
                if found:
                    rows.append(row)
    return rows


def ordering(done: dict[str, Any], models: Sequence[str], sets: Sequence[Any]
             ) -> list[dict[str, Any]]:
    """Per (model, set): the best pooling's raw, whitening and SimCSE-0.3 scores (as post
    8348's table compares them) and whether SimCSE > whitening > raw holds."""
    out = []
    for model in models:
        for s in sets:
            best = {}
            for label, run_method, variant in (("raw", "raw", "raw"), ("whiten", "raw", "full"),
                                               ("simcse", "simcse-0.3", "raw")):
                means = [(float(np.mean(v)), p) for p in POOLINGS
                         if (v := cell(done, model, s.name, run_method, variant, p))]
                best[label] = max(means) if means else (float("nan"), "-")
            r, w, c = (best[x][0] for x in ("raw", "whiten", "simcse"))
            out.append({"model": model, "set": s.name,
                        "raw": f"{r:.2f} ({P_LABEL.get(best['raw'][1], '-')})",
                        "whiten": f"{w:.2f} ({P_LABEL.get(best['whiten'][1], '-')})",
                        "simcse": f"{c:.2f} ({P_LABEL.get(best['simcse'][1], '-')})",
                        "simcse>whiten": bool(c > w), "whiten>raw": bool(w > r)})
    return out


def plot(rows: list[dict[str, Any]], sets: Sequence[Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False,
                             sharey=True)
    labels = [m for m, _, _ in METHODS]
    for ax, model in zip(axes[0], models):
        for pooling in POOLINGS:
            ys = []
            for label in labels:
                match = [r for r in rows if r["model"] == model and r["method"] == label
                         and r["pooling"].endswith(" " + pooling)]
                vals = [np.mean(r[f"{s.name}_values"]) for r in match for s in sets
                        if r[f"{s.name}_values"]]
                ys.append(np.mean(vals) if len(vals) == len(sets) else np.nan)
            if not np.all(np.isnan(ys)):
                # One colour per pooling in every panel (a model without a pooler skips P2).
                ax.plot(range(len(labels)), ys, marker="o", color=f"C{POOLINGS.index(pooling)}",
                        label=f"{P_LABEL[pooling]} {pooling}")
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=7)
        ax.set_title(model, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Spearman x 100, mean of the 4 sets")
    for ax in axes[0]:
        ax.legend(fontsize=7)
    return save_figure(fig, path, title="R7: raw vs whitening vs SimCSE on Chinese STS")
