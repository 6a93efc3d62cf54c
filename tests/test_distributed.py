"""Multi-process runs (`jaxformer.train.distributed`): two processes on localhost, 4 virtual CPU
devices each, run train steps as one global 4 x 2 mesh (gloo collectives between them), with a
sharded orbax checkpoint after each step; the job is killed once and resumes.

Both processes must report the same losses and parameters, and these must equal the same steps
run without interruption by one process over 8 devices: losses rtol 1e-6, per-parameter float64
sums atol 1e-5 (the measured gap is about 1e-7: the same maths, with the cross-process
reductions in another order). Each process builds only its own 4 rows of each 8-row batch.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxformer.train import checkpoint, distributed

SCRIPT = Path(__file__).parent / "scripts" / "sharded_step.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                                "XLA_FLAGS"))}
    # Every process (the pair and the one-process reference) compiles without XLA's optimisation
    # passes, which dominate these toy steps' CPU time (conftest.fast_compile), so all of them
    # run the same programs.
    return {**env, "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "true", **extra}


def _run_pair(out: Path, *args: str) -> tuple[list[int], list[str]]:
    """Run the script as processes 0 and 1 of one job (a fresh coordinator port), 4 virtual CPU
    devices each, reports to `out`; their exit codes and logs."""
    port = _free_port()
    procs = []
    for pid in (0, 1):
        env = _env(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen(
            [sys.executable, str(SCRIPT), "--devices", "4", *args,
             "--out", str(out / f"p{pid}.json")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            p.kill()
    return [p.returncode for p in procs], logs


# FSDP: the parameters themselves are split across the two processes (one preset keeps CI time;
# the script takes --preset for the others). The job is killed once (both processes end with
# os._exit after computing step 3, before its checkpoint) and restarted from checkpoint 2.
@pytest.mark.parametrize("preset", ["fsdp"])
def test_two_processes_run_one_global_mesh_resume_after_a_kill_and_match_one_process(
        tmp_path, preset):
    ckpt = tmp_path / "ckpt"
    common = ("--preset", preset, "--steps", "4", "--ckpt", str(ckpt))
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    codes, logs = _run_pair(first, *common, "--crash-after", "2")
    assert codes == [3, 3], "\n".join(log[-2000:] for log in logs)
    assert not list(first.glob("*.json"))  # killed: no report
    assert checkpoint.finalized_steps(ckpt) == [1, 2]  # step 3 was computed, never saved
    codes, logs = _run_pair(second, *common)
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    ref = subprocess.run([sys.executable, str(SCRIPT), "--devices", "8", "--single", "--preset",
                          preset, "--steps", "4", "--out", str(tmp_path / "ref.json")],
                         env=_env(), capture_output=True, text=True, timeout=240)
    assert ref.returncode == 0, ref.stderr[-3000:]
    p0, p1 = (json.loads((second / f"p{i}.json").read_text()) for i in (0, 1))
    one = json.loads((tmp_path / "ref.json").read_text())
    assert (p0["process_count"], p0["devices"], p0["local_devices"]) == (2, 8, 4)
    assert (p0["process_index"], p1["process_index"]) == (0, 1)
    # Each process read only its own rows of the global batch.
    assert p0["rows"] == [0, 1, 2, 3] and p1["rows"] == [4, 5, 6, 7]
    # The restart resumed from checkpoint 2 and redid steps 3 and 4, equal to the
    # uninterrupted single-process run of all four.
    assert p0["resumed_from"] == p1["resumed_from"] == 2
    assert p0["losses"] == p1["losses"] and p0["param_sums"] == p1["param_sums"]
    np.testing.assert_allclose(p0["losses"], one["losses"][2:], rtol=1e-6)
    np.testing.assert_allclose(p0["param_sums"], one["param_sums"], atol=1e-5)
    assert len(set(one["losses"])) == 4  # every step really changed the parameters


def test_process_rows_split_the_global_batch():
    got = [distributed.process_batch_rows(12, process_index=i, process_count=3)
           for i in range(3)]
    np.testing.assert_array_equal(np.concatenate(got), np.arange(12))
    with pytest.raises(ValueError, match=r"global_batch: expected a multiple of the 3 "
                                         r"processes, got 10"):
        distributed.process_batch_rows(10, process_index=0, process_count=3)


def test_initialize_names_bad_settings_before_touching_jax(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match=r"JAX_NUM_PROCESSES: expected an integer, got 'two'"):
        distributed.initialize()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    with pytest.raises(ValueError, match=r"process_id: expected 0 <= process_id < "
                                         r"num_processes = 2, got 2"):
        distributed.initialize()
    with pytest.raises(ValueError, match=r"num_processes: expected an int >= 1, got 0"):
        distributed.initialize(num_processes=0)
