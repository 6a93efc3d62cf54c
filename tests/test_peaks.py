"""`jaxformer.peaks`: the peak table keyed by device kind, the measured CPU peak, and MFU."""

import jax
import pytest

from jaxformer.peaks import PEAKS, device_peak, lookup_peak, measure_matmul_peak, mfu


@pytest.mark.parametrize("kind, name, tflops", [
    # device_kind strings as jax reports them on each machine
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.0),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", "H100 NVL", 835.0),
    ("NVIDIA H200", "H200", 989.0),  # levanter's table misses it
    ("NVIDIA A100-SXM4-80GB", "A100", 312.0),
    ("NVIDIA A100-PCIE-40GB", "A100", 312.0),
    ("TPU v4", "TPU v4", 275.0),
    ("TPU v5 lite", "TPU v5e", 197.0),
    ("TPU v5e", "TPU v5e", 197.0),
    ("TPU v5", "TPU v5p", 459.0),
    ("TPU v5p", "TPU v5p", 459.0),
    ("TPU v6 lite", "TPU v6e", 918.0),
    ("TPU v6e", "TPU v6e", 918.0),
])
def test_lookup_peak(kind, name, tflops):
    entry = lookup_peak(kind)
    assert entry is not None and (entry.name, entry.tflops) == (name, tflops)
    assert entry.source  # every figure says where it comes from


def test_unknown_devices_have_no_peak():
    assert lookup_peak("cpu") is None
    assert lookup_peak("NVIDIA GeForce RTX 4090") is None
    assert all(e.source and e.tflops > 0 for e in PEAKS)


def test_measure_matmul_peak_small_shapes():
    peak = measure_matmul_peak(shapes=((64, 32, 16), (128, 128, 128)), repeats=3, warmup=1)
    assert [s for s, _ in peak.per_shape] == [(64, 32, 16), (128, 128, 128)]
    assert peak.flops_per_s == max(f for _, f in peak.per_shape) > 0
    assert peak.shape in {(64, 32, 16), (128, 128, 128)} and peak.dtype == "float32"
    with pytest.raises(ValueError, match="repeats must be >= 1 and warmup >= 0, got 0, 2"):
        measure_matmul_peak(repeats=0)
    with pytest.raises(ValueError, match="shapes must name at least one"):
        measure_matmul_peak(shapes=())


def test_device_peak_on_cpu_is_measured_not_looked_up():
    if jax.devices()[0].platform != "cpu":
        pytest.skip("checks the CPU path; accelerators use the table")
    unmeasured = device_peak(measure_cpu=False)
    assert unmeasured.flops_per_s is None and unmeasured.source == "not measured"


def test_mfu_arithmetic_and_errors():
    assert mfu(flops=2e12, seconds=4.0, peak=1e12) == pytest.approx(0.5)
    assert mfu(flops=1.0, seconds=1.0, peak=None) is None
    with pytest.raises(ValueError, match="seconds must be > 0, got 0"):
        mfu(flops=1.0, seconds=0, peak=1.0)
    with pytest.raises(ValueError, match="peak must be > 0 FLOP/s, got -1"):
        mfu(flops=1.0, seconds=1.0, peak=-1)
    with pytest.raises(ValueError, match="flops must be >= 0, got -5"):
        mfu(flops=-5, seconds=1.0, peak=1.0)
