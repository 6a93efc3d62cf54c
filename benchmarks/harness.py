"""Reusable timing and reporting helpers for the benchmarks in this folder.

Every benchmark module times its callables with `time_jax` / `time_torch` (or several of them
round-robin with `prepare_jax` / `prepare_torch` + `time_interleaved`), collects one dict per
case, and hands those rows to `write_report`, which writes `results/<device_slug>/<name>.json`
(machine-readable, with the full environment) and `<name>.md` (human-readable, starting with
the command that reproduces it).

Torch callables are device-aware: on CUDA every timed call ends with `torch.cuda.synchronize()`
(kernels are queued asynchronously, so without it only the launches would be timed) and the
device is synchronised again before the start clock is read, so work left over from a previous
call never lands in the next one's time. `torch_peak_memory` reads the CUDA caching allocator's
peak around a block of calls.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import math
import os
import platform as _platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxformer.flops import xla_cost

REPO_ROOT = Path(__file__).resolve().parent.parent

# Distribution names whose versions go into every report; torch/transformers are optional
# because the JAX-only benchmarks should still run where they are not installed.
_VERSIONED = ("jax", "jaxlib", "flax", "optax", "numpy")
_OPTIONAL_VERSIONED = ("torch", "transformers")

Column = str | tuple[str, str]


# --------------------------------------------------------------------------- environment


def _cpu_model() -> str:
    # /proc/cpuinfo is the only place that names the CPU on Linux; platform.processor() is
    # often empty there, so it is just the fallback for other systems.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _platform.processor() or "unknown"


def _git_commit() -> tuple[str, bool | None]:
    """(short sha or "unknown", whether the tree has uncommitted changes or None)."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        # results/ is excluded: a suite run writes its reports one by one, and the earlier
        # reports must not make the later ones look as if the code had changed.
        sha = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--", ".", ":(exclude)results"))
    except (OSError, subprocess.SubprocessError):
        # A copy of the tree without .git (e.g. shipped to a GPU machine) can be told its commit:
        # JAXFORMER_GIT_COMMIT=<sha> or <sha>+dirty.
        given = os.environ.get("JAXFORMER_GIT_COMMIT", "")
        if given:
            sha, _, flag = given.partition("+")
            return sha, flag == "dirty"
        return "unknown", None
    return sha or "unknown", dirty


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Everything needed to judge whether two result files are comparable."""
    devices = jax.devices()
    dists = [*_VERSIONED, *(d for d in _OPTIONAL_VERSIONED if importlib.util.find_spec(d))]
    versions = {d: v for d in dists if (v := _version(d)) is not None}

    torch_threads = torch_cuda = None
    if importlib.util.find_spec("torch") is not None:
        import torch  # local: importing torch costs ~1 s and is optional

        torch_threads = torch.get_num_threads()
        # torch sees the GPU through its own CUDA build, which need not match jax's; record it.
        if torch.cuda.is_available():
            torch_cuda = {"device": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
                          "cudnn": torch.backends.cudnn.version()}

    # Containers often pin fewer cores than os.cpu_count() reports, so record both; and on a
    # shared machine the load average is the first thing to check when numbers jump.
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None

    commit, dirty = _git_commit()
    return {
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "device_count": len(devices),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "load_avg_1_5_15m": load,
        "python": _platform.python_version(),
        "versions": versions,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "torch_num_threads": torch_threads,
        "torch_cuda": torch_cuda,
        "git_commit": commit,
        "git_dirty": dirty,
        "timestamp_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def device_slug(device_kind: str | None = None, platform: str | None = None) -> str:
    """Folder name for results: "cpu" on CPU, else the device kind slugified.

    With no arguments it describes jax's first device. Given only a kind, the platform is
    inferred ("cpu" kind -> cpu, anything else is treated as an accelerator), so that the
    function can be tested with made-up kinds like "NVIDIA H100 80GB HBM3".
    """
    if device_kind is None:
        dev = jax.devices()[0]
        device_kind, platform = dev.device_kind, dev.platform
    if platform is None:
        platform = "cpu" if device_kind.strip().lower() == "cpu" else "accelerator"
    if platform == "cpu":
        # CPU kinds are not informative in jax ("cpu"); the model name is in the JSON instead.
        return "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", device_kind.lower()).strip("-")
    return slug or platform


# --------------------------------------------------------------------------- timing


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock statistics of repeated calls, in seconds.

    Median and IQR rather than mean and std because timing noise is one-sided (preemption,
    GC) and a single outlier should not move the headline number.
    """

    times_s: tuple[float, ...]
    lower_s: float | None = None
    compile_s: float | None = None
    # XLA's temporary buffer bytes for one call (`memory_analysis()`), None where not reported.
    temp_bytes: int | None = None
    # The last call's result, so callers can check correctness without a second compile.
    output: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def median_s(self) -> float:
        return float(np.median(self.times_s))

    @property
    def p25_s(self) -> float:
        return float(np.percentile(self.times_s, 25))

    @property
    def p75_s(self) -> float:
        return float(np.percentile(self.times_s, 75))

    @property
    def iqr_s(self) -> float:
        return self.p75_s - self.p25_s

    @property
    def min_s(self) -> float:
        return float(min(self.times_s))

    def as_dict(self) -> dict[str, Any]:
        keys = ("median_s", "p25_s", "p75_s", "iqr_s", "min_s", "times_s", "lower_s", "compile_s",
                "temp_bytes")
        return {k: getattr(self, k) for k in keys}


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A zero-argument callable ready to time (compiled, synchronising), plus its build cost."""

    call: Callable[[], Any]
    lower_s: float | None = None
    compile_s: float | None = None
    temp_bytes: int | None = None
    # XLA's compiled FLOP count (`jaxformer.flops.xla_cost`); None for torch callables.
    xla: Any = None
    # `memory_bytes` of the compiled function (temp, argument, output, alias); None for torch.
    memory: Mapping[str, int] | None = None
    # Called (untimed) before each timed call: waits for work still queued on the device.
    sync: Callable[[], None] | None = None


_MEMORY_FIELDS = {"temp": "temp_size_in_bytes", "argument": "argument_size_in_bytes",
                  "output": "output_size_in_bytes", "alias": "alias_size_in_bytes"}


def memory_bytes(compiled: Any) -> dict[str, int] | None:
    """``compiled.memory_analysis()`` as ``{"temp", "argument", "output", "alias"}`` bytes (a
    field the backend leaves out or reports negative is absent), or None where there is no
    analysis (the method may be missing, return None, or raise on some platforms and versions).

    ``alias`` is the part of the output that reuses donated argument buffers, so the bytes live
    during a call are at most temp + argument + output - alias.
    """
    try:
        analysis = compiled.memory_analysis()
    except (AttributeError, NotImplementedError, RuntimeError):
        return None
    if isinstance(analysis, list | tuple):  # older jax: one entry per device
        analysis = analysis[0] if analysis else None
    if analysis is None:
        return None
    out = {}
    for key, attr in _MEMORY_FIELDS.items():
        value = getattr(analysis, attr, None)
        if value is not None and value >= 0:
            out[key] = int(value)
    return out or None


def temp_bytes(compiled: Any) -> int | None:
    """``compiled.memory_analysis().temp_size_in_bytes``, or None where the backend has none."""
    return (memory_bytes(compiled) or {}).get("temp")


def prepare_jax(fn: Callable[..., Any], *args: Any) -> Prepared:
    """Lower and compile `jax.jit(fn)` for `args` (jax pytrees: arrays, nnx.State, ...; close
    over anything static), timing the two steps separately."""

    def fresh(*a: Any) -> Any:
        return fn(*a)

    # jax caches traces and executables per function object, so timing the same `fn` twice
    # (e.g. a second case with equal shapes) would report ~0 s compile; a fresh wrapper makes
    # every call pay, and report, the real lowering and compilation cost.
    t0 = time.perf_counter()
    lowered = jax.jit(fresh).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()

    def call() -> Any:
        # jax dispatch is asynchronous: without blocking we would time only the enqueue.
        return jax.block_until_ready(compiled(*args))

    memory = memory_bytes(compiled)
    return Prepared(call, lower_s=t1 - t0, compile_s=t2 - t1, temp_bytes=(memory or {}).get("temp"),
                    xla=xla_cost(compiled), memory=memory)


def _torch_device(device: Any) -> Any:
    import torch

    if device is None:
        # What the harness always did: synchronise whenever torch has a GPU.
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def torch_sync(device: Any = None) -> Callable[[], None]:
    """A function that waits for every kernel queued on `device` ("cpu", "cuda", "cuda:1", a
    `torch.device`; None: CUDA when torch has it); a no-op on CPU, where torch runs eagerly."""
    import torch

    dev = _torch_device(device)
    if dev.type != "cuda":
        return lambda: None
    return lambda: torch.cuda.synchronize(dev)


def prepare_torch(fn: Callable[..., Any], *args: Any, device: Any = None,
                  inference: bool = True) -> Prepared:
    """Wrap `fn(*args)` for timing on `device` (see `torch_sync`): under
    `torch.inference_mode()` (no autograd bookkeeping) unless ``inference=False`` (a train step),
    and synchronised at the end of the call, so that queued CUDA kernels are actually timed."""
    import torch

    sync = torch_sync(device)

    def call() -> Any:
        with torch.inference_mode() if inference else contextlib.nullcontext():
            out = fn(*args)
        sync()
        return out

    return Prepared(call, sync=sync)


@contextlib.contextmanager
def torch_peak_memory(device: Any = None) -> Iterator[dict[str, int | None]]:
    """``with torch_peak_memory("cuda") as peak: ...`` leaves in ``peak["bytes"]`` the most bytes
    torch's CUDA caching allocator held allocated inside the block
    (`torch.cuda.reset_peak_memory_stats` before, `torch.cuda.max_memory_allocated` after;
    tensors allocated before the block, e.g. the weights, count too). None on CPU, where torch
    keeps no such counter."""
    import torch

    dev = _torch_device(device)
    box: dict[str, int | None] = {"bytes": None}
    if dev.type != "cuda":
        yield box
        return
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    yield box
    torch.cuda.synchronize(dev)
    box["bytes"] = int(torch.cuda.max_memory_allocated(dev))


def time_interleaved(calls: Mapping[str, Prepared], *, warmup: int = 2, repeats: int = 7,
                     budget_s: float | None = None, min_repeats: int = 5) -> dict[str, Timing]:
    """Time several callables round-robin (a, b, c, a, b, c, ...) and return one Timing each.

    Interleaving is what makes a comparison fair on a shared or thermally drifting machine: a
    burst of background load hits every contender in the same round instead of whichever one
    happened to be running. `budget_s` caps the total timed seconds of all callables together
    (never fewer than `min_repeats` rounds) and also cuts warm-up short once one warm-up round
    has taken that long, so one harness serves both 50 us and 10 s cases. A callable's `sync`
    (device-side work still queued) runs before its start clock is read, outside the time.
    """
    if repeats < 1 or min_repeats < 1:
        raise ValueError(f"repeats and min_repeats must be >= 1, got {repeats}, {min_repeats}")
    warm_s = 0.0
    for _ in range(warmup):
        t0 = time.perf_counter()
        for p in calls.values():
            p.call()
        warm_s += time.perf_counter() - t0
        if budget_s is not None and warm_s >= budget_s:
            break
    times: dict[str, list[float]] = {name: [] for name in calls}
    outs: dict[str, Any] = {}
    total = 0.0
    for i in range(repeats):
        for name, p in calls.items():
            if p.sync is not None:
                p.sync()
            t0 = time.perf_counter()
            outs[name] = p.call()
            dt = time.perf_counter() - t0
            times[name].append(dt)
            total += dt
        if budget_s is not None and i + 1 >= min_repeats and total >= budget_s:
            break
    return {
        name: Timing(times_s=tuple(times[name]), lower_s=p.lower_s, compile_s=p.compile_s,
                     temp_bytes=p.temp_bytes, output=outs[name])
        for name, p in calls.items()
    }


def time_jax(fn: Callable[..., Any], *args: Any, warmup: int = 2, repeats: int = 7,
             budget_s: float | None = None, min_repeats: int = 5) -> Timing:
    """Time `jax.jit(fn)(*args)`: lowering and XLA compilation are kept out of the steady-state
    numbers but reported separately (compile time matters to users too)."""
    return time_interleaved({"jax": prepare_jax(fn, *args)}, warmup=warmup, repeats=repeats,
                            budget_s=budget_s, min_repeats=min_repeats)["jax"]


def time_torch(fn: Callable[..., Any], *args: Any, warmup: int = 2, repeats: int = 7,
               budget_s: float | None = None, min_repeats: int = 5, device: Any = None
               ) -> Timing:
    """Time `fn(*args)` under `torch.inference_mode()` on `device` (see `prepare_torch`), same
    statistics as `time_jax`."""
    return time_interleaved({"torch": prepare_torch(fn, *args, device=device)}, warmup=warmup,
                            repeats=repeats, budget_s=budget_s, min_repeats=min_repeats)["torch"]


# --------------------------------------------------------------------------- reporting


def _column_key_header(col: Column) -> tuple[str, str]:
    return (col, col) if isinstance(col, str) else (col[0], col[1])


def format_value(v: Any) -> str:
    """Compact, table-friendly rendering; magnitudes decide the precision."""
    if v is None:
        return "n/a"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        v = float(v)
        if math.isnan(v) or math.isinf(v):
            return str(v)
        a = abs(v)
        if a == 0.0:
            return "0"
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.01:
            return f"{v:.2f}" if a >= 1 else f"{v:.3f}"
        return f"{v:.1e}"
    if isinstance(v, tuple | list):
        return "x".join(format_value(x) for x in v)
    return str(v)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """GitHub-flavoured Markdown table; also readable as plain text on stdout."""

    def cell(text: str) -> str:
        # A bare "|" inside a cell would split it into two Markdown columns.
        return text.replace("|", "\\|")

    keys_headers = [_column_key_header(c) for c in columns]
    header = [cell(h) for _, h in keys_headers]
    body = [[cell(format_value(row.get(k))) for k, _ in keys_headers] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(header), "| " + " | ".join("-" * w for w in widths) + " |"]
    out.extend(line(r) for r in body)
    return "\n".join(out)


def jsonable(obj: Any) -> Any:
    # Strict JSON has no NaN/inf and no numpy scalars; convert rather than emit invalid JSON.
    if isinstance(obj, Timing):
        return jsonable(obj.as_dict())
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)


def environment_summary(env: Mapping[str, Any], dtypes: Sequence[str] = ()) -> str:
    """One line: device, dtype(s), versions, commit -- enough to spot an apples/oranges diff."""
    if env["platform"] == "cpu":
        device = f"cpu ({env['cpu_model']}, {env['cpu_affinity'] or env['cpu_count']} cores)"
    else:
        device = f"{env['device_count']}x {env['device_kind']} ({env['platform']})"
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    parts = [f"device: {device}"]
    if dtypes:
        parts.append("dtype: " + ", ".join(dtypes))
    parts.append(versions)
    if env.get("torch_num_threads") is not None:
        parts.append(f"torch threads {env['torch_num_threads']}")
    if env.get("torch_cuda"):
        tc = env["torch_cuda"]
        parts.append(f"torch on {tc['device']} (CUDA {tc['cuda']}, cuDNN {tc['cudnn']})")
    if env.get("load_avg_1_5_15m") is not None:
        parts.append("load avg 1/5/15 min " + "/".join(map(str, env["load_avg_1_5_15m"])))
    if env.get("xla_flags"):
        parts.append(f"XLA_FLAGS={env['xla_flags']}")
    dirty = "+dirty" if env.get("git_dirty") else ""
    parts.append(f"commit {env['git_commit']}{dirty}")
    parts.append(env["timestamp_utc"])
    return "Environment: " + "; ".join(parts)


def write_report(name: str, rows: Sequence[Mapping[str, Any]], *, columns: Sequence[Column],
                 title: str, command: str, notes: str | Sequence[str] = (),
                 out_dir: str | os.PathLike[str] = "results",
                 env: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write `<out_dir>/<device_slug>/<name>.{json,md}` and return (json_path, md_path).

    The environment is captured here (at write time) unless passed in, so that e.g. the
    torch thread count reflects what the benchmark actually set.
    """
    env = dict(environment() if env is None else env)
    folder = Path(out_dir) / device_slug(env["device_kind"], env["platform"])
    folder.mkdir(parents=True, exist_ok=True)
    notes_list = [notes] if isinstance(notes, str) else list(notes)
    dtypes = sorted({str(r["dtype"]) for r in rows if r.get("dtype") is not None})

    json_path = folder / f"{name}.json"
    payload = {"name": name, "title": title, "command": command, "environment": env,
               "columns": [list(_column_key_header(c)) for c in columns], "notes": notes_list,
               "rows": list(rows)}
    json_path.write_text(json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n")

    md_path = folder / f"{name}.md"
    lines = [f"Reproduce with: `{command}`", "", environment_summary(env, dtypes), "",
             f"## {title}", "", format_table(rows, columns)]
    if notes_list:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes_list]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def save_figure(fig: Any, path: Path, *, title: str | None = None) -> Path:
    """Title (optional), tight layout, write a 120-dpi PNG, close the figure; returns `path`."""
    import matplotlib.pyplot as plt

    if title is not None:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def bench_main(module: str, *, doc: str, run: Callable[..., list[dict[str, Any]]],
               write: Callable[..., Any], columns: Sequence[Column], quick_help: str,
               argv: Sequence[str] | None = None,
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """The command line every benchmark module shares: ``--quick``, ``--out`` (plus whatever
    `add_arguments` adds, passed to `run` by name); prints the table, writes the report with the
    exact command that reproduces it, and prints the paths."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", default="results", help="results root (default: results)")
    if add_arguments is not None:
        add_arguments(parser)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    rows = run(**args)
    print(format_table(rows, columns))
    command = f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv)
    for path in write(rows, out_dir=out, command=command.strip()):
        print(path)
