"""jaxformer: a JAX/Flax NNX research kit for BERT-family encoders and Su Jianlin's posts.

Layers (imports flow downwards only):

    cli / benchmarks / notebooks
    tasks (Task protocol, fit, classification, masked-LM pretraining)
    train (pure steps, the loop, fine-tuning, checkpoints)
    models (NNX modules: EncoderConfig, Encoder, heads, HF name mapping)
    kernels (pure functions: functional, attention, pooling)   io (files <-> arrays, tokenizers)

The top level re-exports the few names most users start with.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Re-exports load on first use (PEP 562 module __getattr__), so `import jaxformer.cli` and
# `jaxformer --help` do not import jax and flax: https://peps.python.org/pep-0562/
_EXPORTS = {
    "Encoder": "jaxformer.models.encoder",
    "EncoderConfig": "jaxformer.models.config",
    "EncoderOutput": "jaxformer.models.encoder",
    "load_pretrained": "jaxformer.models.pretrained",
    "save_pretrained": "jaxformer.models.pretrained",
}

if TYPE_CHECKING:
    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Encoder, EncoderOutput
    from jaxformer.models.pretrained import load_pretrained, save_pretrained


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'jaxformer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "Encoder",
    "EncoderConfig",
    "EncoderOutput",
    "load_pretrained",
    "save_pretrained",
    "__version__",
]
