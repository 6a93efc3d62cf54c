"""The analytic-logistic-regression experiment (`benchmarks/exp_analytic_logreg.py`) on a tiny
configuration: one seed, iris and wine, the full split and 5 per class, no reviews."""

import numpy as np
import pytest

from benchmarks import exp_analytic_logreg as exp

TINY = exp.Config(seeds=(0,), datasets=("iris", "wine"), shots=(5,), reviews=())


@pytest.fixture(scope="module")
def tiny():
    return exp.run(TINY, out=None, log=lambda _: None)


def test_rows_and_accuracies(tiny):
    rows = tiny["rows"]
    assert [(r["dataset"], r["regime"]) for r in rows] == [
        ("iris", "full"), ("iris", "5/class"), ("wine", "full"), ("wine", "5/class")]
    for r in rows:
        assert r["features"] == "raw" and r["seeds"] == 1
        for m in exp.METHODS:
            for part in ("train", "test"):
                assert 0.0 <= r[f"{m}_{part}_mean"] <= 100.0
                assert len(r[f"{m}_{part}_per_seed"]) == 1
                assert r[f"{m}_{part}_std"] == 0.0
            assert " ± " in r[f"{m}_test"]
    few = {r["dataset"]: r["n_train"] for r in rows if r["regime"] == "5/class"}
    assert few == {"iris": 15, "wine": 15}
    iris_full = rows[0]
    assert iris_full["analytic_test_mean"] >= 90.0
    assert iris_full["n_train"] + iris_full["n_test"] == 150
    assert len(tiny["verdicts"]) == len(rows)


def test_deterministic(tiny):
    again = exp.run(exp.Config(seeds=(0,), datasets=("iris",), shots=(5,), reviews=()),
                    out=None, log=lambda _: None)
    for a, b in zip(again["rows"], tiny["rows"][:2], strict=True):
        for m in exp.METHODS:
            assert a[f"{m}_test_per_seed"] == b[f"{m}_test_per_seed"]
            assert a[f"{m}_train_per_seed"] == b[f"{m}_train_per_seed"]


def test_splits_are_seeded_and_stratified():
    _, y = exp.load_sklearn("wine")
    tr, te = exp.split(y, 3, 0.25)
    tr2, te2 = exp.split(y, 3, 0.25)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert not np.intersect1d(tr, te).size and len(tr) + len(te) == len(y)
    idx = exp.few_shot(y[tr], 5, 3)
    assert np.array_equal(np.bincount(y[tr][idx]), [5, 5, 5])
    assert np.array_equal(idx, exp.few_shot(y[tr], 5, 3))
    assert not np.array_equal(idx, exp.few_shot(y[tr], 5, 4))


def _row(regime, analytic, gd, lr=None):
    row = {"dataset": "d", "features": "f", "regime": regime}
    lr = gd if lr is None else lr
    for m, v in (("analytic", analytic), ("analytic_lw", analytic), ("gd", gd),
                 ("sklearn_lr", lr)):
        row[f"{m}_test_per_seed"] = list(v)
    return row


def test_r3_verdict_logic():
    rows = [
        _row("full", [90.0, 91.0], [91.0, 91.5]),         # Δ = -0.75: within 1 point
        _row("full", [90.0, 90.0], [91.5, 91.5]),         # Δ = -1.5: behind by more
        _row("full", [95.0, 95.0], [90.0, 92.0]),         # Δ = +4: ahead by more (not within)
        _row("full", [90.0, 90.0], [91.0, 91.0]),         # |Δ| = 1 exactly: holds
        _row("1k", [72.0, 70.0], [66.0, 71.0]),           # Δ = +2.5: ahead
        _row("5/class", [60.0, 60.0], [60.0, 60.0], [50.0, 50.0]),  # tie with GD: not ahead
    ]
    v = exp.r3_verdicts(rows)
    holds = [x["analytic_vs_gd_holds"] for x in v]
    assert holds == [True, False, False, True, True, False]
    assert [x["claim"] for x in v][:1] == ["|Δ| ≤ 1"] and v[4]["claim"] == "Δ > 0"
    assert v[0]["analytic_vs_gd_delta"] == pytest.approx(-0.75)
    assert v[4]["analytic_vs_gd_seeds_ok"] == 1 and v[4]["analytic_vs_gd_delta_std"] == 3.5
    assert "no, behind" in v[1]["analytic_vs_gd"] and "no, ahead" in v[2]["analytic_vs_gd"]
    assert v[5]["analytic_vs_sklearn_lr_holds"] and v[5]["analytic_vs_sklearn_lr_delta"] == 10.0
    assert v[5]["analytic_lw_vs_gd_holds"] is False
