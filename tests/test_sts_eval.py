"""`jaxformer.tasks.sts`: pairs embedded once per distinct sentence, whitening, positives, and
the R7 experiment's pure pieces (training pool, table cells, ordering)."""

import dataclasses

import numpy as np
import pytest

from jaxformer.io.sts_pairs import SentencePairs


def _pairs(s1, s2, scores):
    return SentencePairs(tuple(s1), tuple(s2), np.float32(scores), np.arange(1, len(s1) + 1),
                         "mem", "pairs")


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    from jaxformer.io import load_tokenizer
    from jaxformer.models.pretrained import load_pretrained

    return load_pretrained(minilm_dir), load_tokenizer(minilm_dir)


def test_encode_pairs_rows_are_the_sentences_embeddings(minilm):
    from jaxformer.models.sentence import embed_sentences
    from jaxformer.tasks.sts import encode_pairs

    model, tok = minilm
    pairs = _pairs(["a cat", "a dog", "a cat"], ["a dog", "the sun", "rain"], [1, 0, 0])
    vectors = encode_pairs(model, tok, pairs, poolings=("cls", "mean"), max_length=16)
    assert set(vectors) == {"cls", "mean"}
    assert vectors["mean"].sentences.shape == (4, 384)  # distinct sentences only
    for pooling in ("cls", "mean"):
        ref1 = embed_sentences(model, tok, list(pairs.s1), pooling=pooling, max_length=16)
        ref2 = embed_sentences(model, tok, list(pairs.s2), pooling=pooling, max_length=16)
        np.testing.assert_allclose(vectors[pooling].u, ref1, atol=1e-5)
        np.testing.assert_allclose(vectors[pooling].v, ref2, atol=1e-5)


def test_sts_eval_whitening_choices():
    from jaxformer.tasks.sts import PairVectors, sts_eval
    from jaxformer.whitening import fit_whitening, stats_of

    rng = np.random.default_rng(0)
    sentences = (rng.normal(size=(60, 6)) + 5.0).astype(np.float32)
    u, v = sentences[:30], sentences[30:]
    gold = rng.normal(size=30).astype(np.float32)
    vec = PairVectors(u, v, sentences)
    raw, w = sts_eval(vec, gold)
    assert w is None and -1 <= raw <= 1
    full, w_full = sts_eval(vec, gold, whiten_k=-1)
    assert w_full.k == 6
    three, w3 = sts_eval(vec, gold, whiten_k=3)
    np.testing.assert_array_equal(w3.kernel, w_full.kernel[:, :3])
    given, _ = sts_eval(vec, gold, whitening=fit_whitening(stats_of(sentences), 3))
    assert given == pytest.approx(three, abs=1e-6)
    other, w_other = sts_eval(vec, gold, whiten_k=-1, fit_vectors=sentences[:40])
    assert w_other.count == 40
    with pytest.raises(ValueError, match=r"whiten_k: expected -1 or an int in \[1, E=6\]"):
        sts_eval(vec, gold, whiten_k=7)


def test_positives_binary_and_graded():
    from jaxformer.tasks.sts import positives

    assert positives(_pairs("ab", "cd", [1, 0])).tolist() == [True, False]
    assert positives(_pairs("abc", "def", [4.2, 3.9, 5.0])).tolist() == [True, False, True]


def test_alignment_uniformity_matches_float64_numpy():
    from jaxformer.tasks.sts import alignment_uniformity

    rng = np.random.default_rng(1)
    u, v = rng.normal(size=(2, 20, 5)).astype(np.float32)
    pos = np.arange(20) % 3 == 0
    got = alignment_uniformity(u, v, pos, np.concatenate([u, v]))

    def unit(x):
        x = x.astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    align = np.mean(np.sum((unit(u[pos]) - unit(v[pos])) ** 2, axis=1))
    z = unit(np.concatenate([u, v]))
    d = [np.sum((z[i] - z[j]) ** 2) for i in range(len(z)) for j in range(i + 1, len(z))]
    uniform = np.log(np.mean(np.exp(-2.0 * np.asarray(d))))
    assert got["alignment"] == pytest.approx(align, rel=1e-5)
    assert got["uniformity"] == pytest.approx(uniform, rel=1e-5)


def test_r7_training_pool_never_holds_an_evaluated_sentence():
    from benchmarks.exp_simcse_r7 import sample_pool, shared_pool, whiten_k

    pools = {"a": [f"a{i}" for i in range(100)], "b": [f"b{i}" for i in range(10)]}
    evaluated = {"a3", "a5", "b1"}
    pool = shared_pool(pools, evaluated, 40, seed=0)
    assert not set(pool) & evaluated
    assert sum(x.startswith("a") for x in pool) == 20 and sum(x.startswith("b") for x in pool) == 9
    assert pool == shared_pool(pools, evaluated, 40, seed=0)
    assert pool != shared_pool(pools, evaluated, 40, seed=1)
    assert sample_pool(["x", "y"], 5, 0) == ["x", "y"]
    assert (whiten_k(768), whiten_k(384), whiten_k(256)) == (256, 256, 128)


def test_r7_tables_from_runs():
    from benchmarks.exp_simcse_r7 import SETS
    from benchmarks.simcse_r7_report import ordering, table_rows

    sets = SETS[:2]

    def scores(raw, full, k=None):
        out = {"raw": {"spearman": raw, "alignment": 0.5, "uniformity": -1.0},
               "full": {"spearman": full, "alignment": 0.6, "uniformity": -2.0}}
        if k is not None:
            out["k128"] = {"spearman": k, "alignment": 0.7, "uniformity": -3.0}
        return out

    done = {}
    for s in sets:
        done[f"m|{s.name}|raw|-"] = {"k": 128, "scores": {"cls": scores(10, 20, 15),
                                                          "mean": scores(30, 25, 24)}}
        for seed, val in ((0, 40.0), (1, 44.0)):
            done[f"m|{s.name}|simcse-0.3|{seed}"] = {"scores": {"cls": scores(val, val + 1),
                                                                "mean": scores(val - 5, 1)}}
    rows = table_rows(done, ["m"], sets)
    by = {(r["method"], r["pooling"]): r for r in rows}
    assert by[("raw", "P1 cls")][sets[0].name] == "10.00"
    assert by[("whiten-k", "P1 cls")][sets[0].name] == "15.00"
    assert by[("simcse-0.3", "P1 cls")][sets[1].name] == "42.00 ± 2.83"
    assert by[("simcse-0.3+whiten", "P3 mean")][sets[0].name] == "1.00 ± 0.00"
    assert ("simcse-0.1", "P1 cls") not in by  # no runs, no row
    order = ordering(done, ["m"], sets)[0]
    assert order["raw"] == "30.00 (P3)" and order["whiten"] == "25.00 (P3)"
    assert order["simcse"] == "42.00 (P1)"
    assert order["simcse>whiten"] and not order["whiten>raw"]
