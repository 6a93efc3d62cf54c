"""jaxformer: a JAX/Flax NNX research kit for BERT-family encoders and Su Jianlin's posts.

Layers (imports flow downwards only):

    cli / benchmarks / notebooks
    tasks (Task protocol, fit, classification, masked-LM pretraining)
    train (pure steps, the loop, fine-tuning, checkpoints)
    models (NNX modules: EncoderConfig, Encoder, heads, HF name mapping)
    kernels (pure functions: functional, attention, pooling)   io (files <-> arrays, tokenizers)

The top level re-exports the few names most users start with.
"""

from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder, EncoderOutput
from jaxformer.models.pretrained import load_pretrained, save_pretrained

__version__ = "0.1.0"

__all__ = [
    "Encoder",
    "EncoderConfig",
    "EncoderOutput",
    "load_pretrained",
    "save_pretrained",
    "__version__",
]
