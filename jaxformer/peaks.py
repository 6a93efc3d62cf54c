"""Peak FLOP/s per device and model FLOPs utilisation (MFU).

    peak = device_peak()                        # the first jax device
    mfu(flops=layer_flops(...)["matmul_total"], seconds=t, peak=peak)

Accelerators are looked up in `PEAKS` by ``jax.devices()[0].device_kind``: each entry is the
dense (no sparsity) bf16 tensor-core figure from the vendor's datasheet, with its source, so a
reader can check it. On CPU no datasheet figure is meaningful (clock, cores and ISA vary per
machine and container), so the peak is *measured*: the best f32 matmul throughput of XLA on a
few shapes, in the same process as the benchmark it normalises (`measure_matmul_peak`). A CPU
MFU is therefore "fraction of what XLA's own matmul reaches here", an achievable ceiling.

MaxText and levanter compute MFU the same way (analytic model FLOPs / time / peak); levanter's
table misses the H200, which has the H100 SXM's tensor cores (989 TFLOP/s bf16 dense).
"""

import dataclasses
import re
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike


@dataclasses.dataclass(frozen=True)
class PeakEntry:
    """One row of the table: a device-kind pattern, its bf16 dense peak and where it is from."""

    name: str
    pattern: str  # regex, matched case-insensitively against device_kind
    tflops: float
    source: str


# Most specific patterns first: "H100 PCIe" must win over "H100".
PEAKS: tuple[PeakEntry, ...] = (
    PeakEntry("H100 PCIe", r"h100.*pcie", 756.0,
              "NVIDIA H100 PCIe datasheet: BF16 Tensor Core 1,513 TFLOP/s with sparsity, half dense"),
    PeakEntry("H100 NVL", r"h100.*nvl", 835.0,
              "NVIDIA H100 NVL datasheet: BF16 Tensor Core 1,671 TFLOP/s with sparsity, half dense"),
    PeakEntry("H100 SXM", r"h100", 989.0,
              "NVIDIA H100 SXM datasheet: BF16 Tensor Core 1,979 TFLOP/s with sparsity, half dense"),
    PeakEntry("H200", r"h200", 989.0,
              "NVIDIA H200 datasheet: BF16 Tensor Core 1,979 TFLOP/s with sparsity, half dense "
              "(the H100 SXM's GH100 tensor cores)"),
    PeakEntry("A100", r"a100", 312.0,
              "NVIDIA A100 datasheet: BF16 Tensor Core 312 TFLOP/s dense (624 with sparsity)"),
    PeakEntry("TPU v4", r"tpu\s*v4", 275.0,
              "Google Cloud TPU v4 documentation: 275 TFLOP/s bf16 per chip"),
    PeakEntry("TPU v5e", r"tpu\s*v5\s*(lite|e)", 197.0,
              "Google Cloud TPU v5e documentation: 197 TFLOP/s bf16 per chip"),
    PeakEntry("TPU v5p", r"tpu\s*v5\s*p?$", 459.0,
              "Google Cloud TPU v5p documentation: 459 TFLOP/s bf16 per chip"),
    PeakEntry("TPU v6e", r"tpu\s*v6\s*(lite|e)", 918.0,
              "Google Cloud TPU v6e (Trillium) documentation: 918 TFLOP/s bf16 per chip"),
)


def lookup_peak(device_kind: str) -> PeakEntry | None:
    """The table entry for a ``device_kind`` string, or None when the device is not listed."""
    kind = device_kind.strip().lower()
    for entry in PEAKS:
        if re.search(entry.pattern, kind):
            return entry
    return None


@dataclasses.dataclass(frozen=True)
class MatmulPeak:
    """The best measured matmul throughput and every shape tried.

    Attributes:
      flops_per_s: the maximum over `per_shape`.
      shape: ``(M, K, N)`` that reached it.
      dtype: the operand dtype.
      per_shape: ``((M, K, N), FLOP/s)`` for each shape, median of the timed calls.
    """

    flops_per_s: float
    shape: tuple[int, int, int]
    dtype: str
    per_shape: tuple[tuple[tuple[int, int, int], float], ...]


# Square, and BERT-base's projection and FFN shapes at 512 tokens: the model's own matmuls are
# among the candidates, so a CPU MFU never exceeds 1 merely because the peak shape was unlucky.
DEFAULT_MATMUL_SHAPES: tuple[tuple[int, int, int], ...] = (
    (2048, 2048, 2048), (512, 768, 768), (512, 768, 3072), (512, 3072, 768))


def measure_matmul_peak(*, dtype: DTypeLike = jnp.float32,
                        shapes: Sequence[tuple[int, int, int]] = DEFAULT_MATMUL_SHAPES,
                        repeats: int = 10, warmup: int = 2) -> MatmulPeak:
    """Time ``[M, K] @ [K, N]`` under `jax.jit` for each shape and return the best FLOP/s.

    2·M·K·N FLOPs per call, median of `repeats` calls after `warmup`, operands resident on the
    default device, `block_until_ready` after every call.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    if not shapes:
        raise ValueError("shapes must name at least one (M, K, N), got none")
    dtype = jnp.dtype(dtype)
    results = []
    for i, (m, k, n) in enumerate(shapes):
        ka, kb = jax.random.split(jax.random.key(i))
        a = jax.random.normal(ka, (m, k), dtype)
        b = jax.random.normal(kb, (k, n), dtype)
        matmul = jax.jit(jnp.matmul).lower(a, b).compile()
        for _ in range(warmup):
            jax.block_until_ready(matmul(a, b))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(matmul(a, b))
            times.append(time.perf_counter() - t0)
        results.append(((m, k, n), 2.0 * m * k * n / float(np.median(times))))
    best_shape, best = max(results, key=lambda r: r[1])
    return MatmulPeak(best, best_shape, dtype.name, tuple(results))


@dataclasses.dataclass(frozen=True)
class DevicePeak:
    """The peak an MFU is computed against, and how it was obtained."""

    device_kind: str
    flops_per_s: float | None
    dtype: str
    source: str
    measured: MatmulPeak | None = None


def device_peak(device: jax.Device | None = None, *, measure_cpu: bool = True,
                dtype: DTypeLike = jnp.float32) -> DevicePeak:
    """The peak FLOP/s of `device` (default: the first jax device).

    Accelerators: the `PEAKS` table (bf16 dense), ``flops_per_s=None`` when the device kind is
    not listed. CPU: `measure_matmul_peak` in `dtype` (skipped with ``measure_cpu=False``).
    """
    device = jax.devices()[0] if device is None else device
    kind = device.device_kind
    if device.platform == "cpu":
        if not measure_cpu:
            return DevicePeak(kind, None, jnp.dtype(dtype).name, "not measured")
        measured = measure_matmul_peak(dtype=dtype)
        m, k, n = measured.shape
        return DevicePeak(kind, measured.flops_per_s, measured.dtype,
                          f"measured: best jitted {measured.dtype} matmul over "
                          f"{len(measured.per_shape)} shapes ({m}x{k} @ {k}x{n})", measured)
    entry = lookup_peak(kind)
    if entry is None:
        return DevicePeak(kind, None, "bfloat16",
                          f"device kind {kind!r} is not in jaxformer.peaks.PEAKS")
    return DevicePeak(kind, entry.tflops * 1e12, "bfloat16", entry.source)


def mfu(*, flops: float | int, seconds: float | int, peak: float | int | None) -> float | None:
    """Model FLOPs utilisation: ``flops / seconds / peak`` (None without a peak)."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if flops < 0:
        raise ValueError(f"flops must be >= 0, got {flops}")
    if peak is None:
        return None
    if peak <= 0:
        raise ValueError(f"peak must be > 0 FLOP/s, got {peak}")
    return flops / seconds / peak
