"""`EncoderConfig`: one frozen description of every encoder in the kit, with named presets.

A new attention or position scheme is a new *value* here (``attention=``, ``position=``) plus a
kernel, never a new block class. Field names follow HF `BertConfig` where one exists, so
``from_hf`` / ``to_hf_dict`` are a rename table rather than logic.
"""


import dataclasses
import json
from pathlib import Path
from typing import Any

from jaxformer.functional import ACTIVATIONS

ATTENTION_KINDS = ("softmax",)
POSITION_KINDS = ("absolute",)
NORM_KINDS = ("post", "pre")

# HF config.json key -> EncoderConfig field.
_HF_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "hidden_act": "hidden_act",
    "hidden_dropout_prob": "hidden_dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "initializer_range": "initializer_range",
    "layer_norm_eps": "layer_norm_eps",
    "pad_token_id": "pad_token_id",
}
SUPPORTED_MODEL_TYPES = ("bert",)


@dataclasses.dataclass(frozen=True, slots=True)
class EncoderConfig:
    """Hyperparameters of a BERT-family encoder.

    Attributes:
      vocab_size: V, rows of the token embedding.
      hidden_size: E, the model width.
      num_layers: L, the number of blocks.
      num_heads: H; the head dim is ``D = E / H``.
      intermediate_size: F, the FFN width.
      hidden_act: activation of the FFN, by its HF name (``"gelu"`` is exact erf GELU).
      max_position_embeddings: rows of the learned absolute position table.
      type_vocab_size: number of segment ids (0 disables the segment embedding).
      layer_norm_eps: epsilon inside every LayerNorm.
      hidden_dropout: dropout on embeddings and on each sub-layer's output.
      attention_dropout: dropout on attention probabilities.
      initializer_range: std of the N(0, std^2) weight init (HF BERT).
      norm: ``"post"`` (BERT: LN after each residual add) or ``"pre"`` (LN before each
        sub-layer, plus a final LN; Xiong et al. 2020).
      attention: name of the attention kernel (``"softmax"``).
      position: ``"absolute"`` (learned table).
      use_pooler: whether the model has BERT's ``tanh(W h_cls + b)`` pooler.
      pad_token_id: id of the padding token.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    norm: str = "post"
    attention: str = "softmax"
    position: str = "absolute"
    use_pooler: bool = True
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"EncoderConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 0:
            raise ValueError(
                f"EncoderConfig.type_vocab_size must be an int >= 0, got {self.type_vocab_size!r}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"EncoderConfig.hidden_size={self.hidden_size} must be divisible by "
                f"num_heads={self.num_heads}"
            )
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"EncoderConfig.{name} must be in [0, 1), got {value!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"EncoderConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if not self.initializer_range > 0:
            raise ValueError(
                f"EncoderConfig.initializer_range must be > 0, got {self.initializer_range!r}"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"EncoderConfig.pad_token_id must be in [0, vocab_size={self.vocab_size}), "
                f"got {self.pad_token_id!r}"
            )
        choices = {
            "hidden_act": tuple(ACTIVATIONS),
            "norm": NORM_KINDS,
            "attention": ATTENTION_KINDS,
            "position": POSITION_KINDS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"EncoderConfig.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}"
                )

    @property
    def head_dim(self) -> int:
        """D, the per-head width ``E / H``."""
        return self.hidden_size // self.num_heads

    def replace(self, **changes: Any) -> "EncoderConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # --- presets -------------------------------------------------------------------------
    @classmethod
    def tiny(cls, **overrides: Any) -> "EncoderConfig":
        """A 2-layer, width-32 encoder for tests and smoke runs."""
        base = dict(vocab_size=128, hidden_size=32, num_layers=2, num_heads=4,
                    intermediate_size=64, max_position_embeddings=64)
        return cls(**{**base, **overrides})

    @classmethod
    def bert_base(cls, **overrides: Any) -> "EncoderConfig":
        """BERT-base (Devlin et al. 2019, Table/§3): L=12, E=768, H=12, F=3072, 110M params."""
        return cls(**overrides)

    @classmethod
    def bert_large(cls, **overrides: Any) -> "EncoderConfig":
        """BERT-large: L=24, E=1024, H=16, F=4096, 340M params."""
        base = dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096)
        return cls(**{**base, **overrides})

    @classmethod
    def minilm_l6(cls, **overrides: Any) -> "EncoderConfig":
        """The shape of all-MiniLM-L6-v2: L=6, E=384, H=12, F=1536."""
        base = dict(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536)
        return cls(**{**base, **overrides})

    # --- Hugging Face config.json --------------------------------------------------------
    @classmethod
    def from_hf(cls, source: str | Path | dict[str, Any], **overrides: Any) -> "EncoderConfig":
        """Build from an HF ``config.json`` (a path to the file or its directory, or a dict)."""
        if isinstance(source, dict):
            raw, where = source, "config dict"
        else:
            path = Path(source)
            if path.is_dir():
                path = path / "config.json"
            if not path.is_file():
                raise FileNotFoundError(
                    f"no config.json at {path}: a Hugging Face model directory needs one "
                    "(model_type, hidden_size, num_hidden_layers, ...)"
                )
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from None
            where = str(path)
        model_type = raw.get("model_type", "bert")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"{where}: model_type={model_type!r} is not supported; expected one of "
                f"{list(SUPPORTED_MODEL_TYPES)}"
            )
        pos_type = raw.get("position_embedding_type", "absolute")
        if pos_type != "absolute":
            raise ValueError(
                f"{where}: position_embedding_type={pos_type!r} is not supported; expected 'absolute'"
            )
        fields = {ours: raw[theirs] for theirs, ours in _HF_KEYS.items() if theirs in raw}
        if fields.get("pad_token_id") is None:
            fields.pop("pad_token_id", None)
        try:
            return cls(**{**fields, **overrides})
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` dict that transformers' `BertConfig` / `BertModel` read."""
        if self.norm != "post":
            raise ValueError(
                f"EncoderConfig.norm={self.norm!r} has no HF BertModel equivalent; only 'post' exports"
            )
        out: dict[str, Any] = {"model_type": "bert", "architectures": ["BertModel"]}
        out.update({theirs: getattr(self, ours) for theirs, ours in _HF_KEYS.items()})
        out["position_embedding_type"] = "absolute"
        return out
