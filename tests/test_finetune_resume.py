"""Kill-and-resume: a fine-tune (``fit(ClassificationTask(...))`` through the task-agnostic
`train_loop`) SIGKILLed mid-run and restarted ends where an uninterrupted run ends, parameters and
metrics file alike; a checkpoint of another model is refused as a whole.

The runs are subprocesses of ``tests/scripts/finetune_run.py`` (40 steps, a checkpoint every
5). Resume is exact by construction (batches and dropout keys are pure functions of
``(seed, step)``, and orbax finalizes checkpoints atomically), so the comparison tolerance only
has to absorb fp32 noise: atol 1e-6 on parameters and losses (in practice they are bitwise equal).
The metrics lines hold no wall-clock field, so the two files are compared line by line.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.heads import SequenceClassifier
from jaxformer.train.checkpoint import Checkpointer, finalized_steps
from jaxformer.train.finetune import FinetuneConfig, finetune
from jaxformer.train.optim import adamw
from jaxformer.train.step import init_train_state

SCRIPT = Path(__file__).parent / "scripts" / "finetune_run.py"
REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180


def launch(out: Path, ckpt: Path, *, sleep: float = 0.0) -> subprocess.Popen:
    """Start the script; its stdout/stderr go to files (a full pipe would block it).

    The runs share a persistent XLA compilation cache (fresh per test), so the resumed run
    loads the executables the first runs compiled instead of compiling again (~4 s saved);
    a cached executable is the same program, so this changes no number. Every run compiles
    without XLA's optimisation passes (conftest.fast_compile), so all run the same programs.
    """
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "true",
           "JAX_COMPILATION_CACHE_DIR": str(out.parent / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "stderr.txt", "ab")  # noqa: SIM115 (closed after the process exits)
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--checkpoint-dir", str(ckpt),
           "--sleep-per-step", str(sleep)]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    proc.log_file = log
    return proc


def finish(proc: subprocess.Popen, out: Path) -> None:
    try:
        proc.wait(timeout=TIMEOUT_S)
    finally:
        proc.log_file.close()
    assert proc.returncode == 0, (out / "stderr.txt").read_text()


@pytest.fixture
def spawn():
    """`launch`, plus cleanup: a process still running when the test ends (a failed assert)
    is killed, so no stray training run outlives the test."""
    procs = []

    def start(*args, **kwargs) -> subprocess.Popen:
        procs.append(launch(*args, **kwargs))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.log_file.close()


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, spawn):
    # The reference run and the run to be killed start together (the victim sleeps 0.25 s
    # per step, so it is still early in training when its first checkpoint is finalized).
    reference = spawn(tmp_path / "ref", tmp_path / "ref_ckpt")
    victim = spawn(tmp_path / "run", tmp_path / "ckpt", sleep=0.25)
    deadline = time.monotonic() + TIMEOUT_S
    while not finalized_steps(tmp_path / "ckpt"):
        assert victim.poll() is None, (tmp_path / "run" / "stderr.txt").read_text()
        assert time.monotonic() < deadline, "no checkpoint was finalized in time"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=TIMEOUT_S)
    victim.log_file.close()
    assert victim.returncode == -signal.SIGKILL  # really killed, not finished
    assert not (tmp_path / "run" / "result.json").exists()
    steps_at_kill = finalized_steps(tmp_path / "ckpt")
    assert steps_at_kill and max(steps_at_kill) < 40

    resumed = spawn(tmp_path / "run", tmp_path / "ckpt")  # same arguments, no sleep
    finish(resumed, tmp_path / "run")
    finish(reference, tmp_path / "ref")

    result = json.loads((tmp_path / "run" / "result.json").read_text())
    expected = json.loads((tmp_path / "ref" / "result.json").read_text())
    assert expected["resumed_from"] is None
    assert result["resumed_from"] in steps_at_kill and result["resumed_from"] > 0
    assert "resumed from checkpoint step" in (tmp_path / "run" / "stderr.txt").read_text()
    assert result["final_step"] == expected["final_step"] == 40
    # Losses before the kill come from the checkpoint, after it from the resumed process.
    np.testing.assert_allclose(result["history"], expected["history"], rtol=0, atol=1e-6)
    assert result["eval_history"][-1]["step"] == 40
    np.testing.assert_allclose(result["eval_history"][-1]["loss"],
                               expected["eval_history"][-1]["loss"], rtol=0, atol=1e-6)
    got = np.load(tmp_path / "run" / "params.npz")
    want = np.load(tmp_path / "ref" / "params.npz")
    assert sorted(got.files) == sorted(want.files) and len(want.files) > 10
    for name in want.files:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)
    # The metrics file: lines written after the restored checkpoint by the killed process were
    # cut on resume, so it equals the uninterrupted run's (40 train lines, eval at 20 and 40).
    got_lines = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    want_lines = read_jsonl(tmp_path / "ref" / "metrics.jsonl")
    assert [(r["step"], r["split"]) for r in got_lines] == [(r["step"], r["split"])
                                                            for r in want_lines]
    assert [r["step"] for r in want_lines if r["split"] == "train"] == list(range(1, 41))
    assert [r["step"] for r in want_lines if r["split"] == "eval"] == [20, 40]
    assert set(want_lines[0]) == {"step", "split", "loss", "accuracy", "grad_norm",
                                  "learning_rate"}
    for got_line, want_line in zip(got_lines, want_lines, strict=True):
        assert set(got_line) == set(want_line)
        np.testing.assert_allclose([v for k, v in got_line.items() if k != "split"],
                                   [v for k, v in want_line.items() if k != "split"],
                                   rtol=0, atol=1e-6, err_msg=str(want_line))
    # The task was learned, so the comparison is not between two untrained models.
    assert expected["history"][-1] < 0.2
    assert finalized_steps(tmp_path / "ckpt")[-1] == 40


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def classifier(**overrides) -> SequenceClassifier:
    cfg = EncoderConfig.tiny(**{"num_layers": 1, **overrides})
    return SequenceClassifier(Encoder(cfg, rngs=nnx.Rngs(params=0)), 2, rngs=nnx.Rngs(params=1))


def test_mismatched_checkpoint_is_refused_whole(tmp_path, nnx_mode):
    tx = adamw(1e-3, total_steps=10)
    _, saved = init_train_state(classifier(), tx)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(3, saved, extra={"epoch": 1, "history": [0.7, 0.6, 0.5]})

    other = classifier(num_layers=2, intermediate_size=48)
    _, target = init_train_state(other, tx)
    before = [np.array(x) for x in jax.tree.leaves(target)]
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        with pytest.raises(ValueError, match="does not match the target state") as err:
            ckpt.restore(3, target)
        message = str(err.value)
        assert "in target, not in checkpoint (48):" in message
        assert "params.encoder.blocks.1.attention.key.bias" in message
        assert ("params.encoder.blocks.0.ffn.intermediate.kernel.value: checkpoint (32, 64) "
                "float32, target (32, 48) float32") in message
        with pytest.raises(FileNotFoundError, match=r"no finalized checkpoint for step=4"):
            ckpt.restore(4, target)
        # The matching target restores exactly, from abstract shapes only.
        state, extra = ckpt.restore(3, jax.eval_shape(lambda: saved))
    assert extra == {"epoch": 1, "history": [0.7, 0.6, 0.5]}
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(saved), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The refused target is untouched (same values, buffers alive).
    for leaf, old in zip(jax.tree.leaves(target), before, strict=True):
        assert not leaf.is_deleted()
        np.testing.assert_array_equal(np.asarray(leaf), old)

    # finetune on that directory with the other model refuses before training one step.
    params_before = [np.array(x) for x in jax.tree.leaves(nnx.state(other, nnx.Param))]
    data = {"input_ids": np.full((16, 8), 7, np.int32), "labels": np.zeros(16, np.int32)}
    config = FinetuneConfig(learning_rate=1e-3, batch_size=8, total_steps=10)
    with pytest.raises(ValueError, match="does not match the target state"):
        finetune(other, data, config=config, checkpoint_dir=tmp_path / "ckpt", progress=False)
    for leaf, old in zip(jax.tree.leaves(nnx.state(other, nnx.Param)), params_before, strict=True):
        np.testing.assert_array_equal(np.asarray(leaf), old)
    assert finalized_steps(tmp_path / "ckpt") == [3]


def test_finetune_config_validation_names_the_field():
    with pytest.raises(ValueError, match=r"FinetuneConfig.warmup_steps must be <= total_steps=10, "
                                         r"got 11"):
        FinetuneConfig(total_steps=10, warmup_steps=11)
    with pytest.raises(ValueError, match=r"FinetuneConfig.batch_size must be an int >= 1, got 0"):
        FinetuneConfig(batch_size=0)
    with pytest.raises(ValueError,
                       match=r"FinetuneConfig.learning_rate must be a finite float > 0"):
        FinetuneConfig(learning_rate=-1.0)
