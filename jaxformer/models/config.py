"""`EncoderConfig`: one frozen description of every encoder in the kit, with named presets.

A new attention or position scheme is a new *value* here (``attention=``, ``position=``) plus a
kernel, never a new block class: RoFormer (Su et al. 2021) is ``position="rope"``. Field names
follow HF `BertConfig` / `RoFormerConfig` where one exists, so ``from_hf`` / ``to_hf_dict`` are a
rename table rather than logic.
"""


import dataclasses
import math
from pathlib import Path
from typing import Any

from jaxformer.feature_maps import FEATURE_MAPS
from jaxformer.functional import ACTIVATIONS
from jaxformer.linear_attention import MODES as LINEAR_MODES, NORMALIZERS as LINEAR_NORMALIZERS
from jaxformer.residual import RESIDUAL_KINDS, deepnorm_constants

ATTENTION_KINDS = ("softmax", "linear")
POSITION_KINDS = ("absolute", "rope", "rope_mixed")
ROTARY_POSITIONS = ("rope", "rope_mixed")
ROPE_LAYOUTS = ("interleaved", "half")
NORM_KINDS = ("post", "pre", "none")
NORM_TYPES = ("layernorm", "rmsnorm")
# How Dense kernels are drawn (embeddings keep N(0, initializer_range²): a norm follows them).
WEIGHT_INITS = ("normal", "truncated_normal", "lecun_normal", "xavier_normal", "he_normal")
VARIANCE_SCALING_INITS = ("lecun_normal", "xavier_normal", "he_normal")
PARAMETRIZATIONS = ("standard", "ntk", "mup")
ATTENTION_SCALES = ("auto", "sqrt", "t5", "none", "mup")
# How softmax attention is computed (`jaxformer.models.attention_kernels`): the kit's XLA kernel,
# `jax.nn.dot_product_attention` (cuDNN's fused kernel on NVIDIA GPUs), the Pallas flash kernel,
# or "auto" (the fastest measured path for the backend, dtype and whether dropout is on).
ATTENTION_IMPLS = ("auto", "xla", "fused", "flash")
# Compute and storage dtypes (Flax's `dtype` / `param_dtype`).
DTYPES = ("float32", "bfloat16", "float16")
# `precision=` of every matmul of the model; "default" defers to jax's
# `jax_default_matmul_precision` (the backend's own default when unset).
MATMUL_PRECISIONS = ("default", "high", "highest")
# Rematerialisation of the blocks in the backward pass (`jaxformer.models.block_stack`).
REMAT_POLICIES = ("none", "block", "dots_saveable", "dots_with_no_batch_dims_saveable")
# Named (dtype, param_dtype) pairs: the ways users train. "mixed_bf16" is what
# `torch.autocast(dtype=torch.bfloat16)` does with fp32 parameters.
PRECISION_POLICIES: dict[str, dict[str, str]] = {
    "fp32": dict(dtype="float32", param_dtype="float32"),
    "bf16": dict(dtype="bfloat16", param_dtype="bfloat16"),
    "mixed_bf16": dict(dtype="bfloat16", param_dtype="float32"),
}
# Post 8's residual/norm schemes by name, as `EncoderConfig` overrides: what the moment report,
# the depth experiment, the notebook and the tests compare.
RESIDUAL_SCHEMES: dict[str, dict[str, str]] = {
    "post_ln": dict(norm="post"),
    "pre_ln": dict(norm="pre"),
    "deepnorm": dict(norm="post", residual="deepnorm"),
    "rezero": dict(norm="none", residual="rezero"),
    "rezero_ramp": dict(norm="none", residual="rezero_ramp"),
}


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
      max_position_embeddings: rows of the learned absolute position table; for
        ``position="rope"`` (no table) the longest input HF's model accepts, and the default
        tokenizer truncation length.
      type_vocab_size: number of segment ids (0 disables the segment embedding).
      layer_norm_eps: epsilon inside every LayerNorm.
      hidden_dropout: dropout on embeddings and on each sub-layer's output.
      attention_dropout: dropout on attention probabilities.
      initializer_range: std of the N(0, std^2) weight init (HF BERT).
      norm: ``"post"`` (BERT: LN after each residual add) or ``"pre"`` (LN before each
        sub-layer, plus a final LN; Xiong et al. 2020).
      attention: name of the attention kernel: ``"softmax"`` or ``"linear"``
        (`jaxformer.linear_attention`; with RoPE it rotates the numerator's features only, Su's
        recipe, and it has no attention probabilities, so it needs ``attention_dropout=0``).
      position: ``"absolute"`` (learned table), ``"rope"`` (RoFormer: rotary q and k in
        every layer, no position table) or ``"rope_mixed"`` (RoPE-Mixed, Heo et al. 2024: like
        ``"rope"`` but every layer learns its frequencies ``[H, rope_axes, D/2]``, initialised
        by `jaxformer.rope.rope_mixed_init` with base ``rope_base``).
      use_pooler: whether the model has BERT's ``tanh(W h_cls + b)`` pooler (HF RoFormerModel
        has none).
      pad_token_id: id of the padding token.
      rope_base: the RoPE base b; pair i turns by ``p * b^(-2i/D)`` at position p.
      rope_layout: which features form a rotated pair: ``"interleaved"`` ``(2i, 2i+1)``
        (RoFormer, HF RoFormer, bert4keras) or ``"half"`` ``(i, i + D/2)``.
      rotary_value: also rotate v (HF `RoFormerConfig.rotary_value`).
      rope_axes: A, the number of position axes the blocks' RoPE expects (1 text; 2 image
        rows and columns, given as positions ``[B|1, T, 2]``). With A > 1 the head dim is split
        into A equal sections for ``"rope"``; blocks then need explicit ``positions``.
      embedding_size: width of the token/segment embeddings and their LayerNorm; None means
        ``hidden_size``. When it differs, a Dense ``embedding_size -> hidden_size`` follows
        the embedding LayerNorm (HF RoFormer's ``embeddings_project``, ALBERT-style).
      causal: token t attends only to tokens s <= t (a decoder-only LM); False is BERT.
      linear_feature_map: φ for ``attention="linear"``, a name in
        `jaxformer.feature_maps.FEATURE_MAPS` (``"elu+1"``, ``"relu"``, ``"identity"``,
        ``"taylor"``).
      linear_normalize: ``"divide"``, ``"rmsnorm"`` or ``"none"`` (`linear_attention`).
      linear_mode: ``"auto"``, ``"parallel"``, ``"chunked"``, ``"scan"`` or ``"quadratic"``.
      linear_chunk_size: W, the chunk size of the chunked form.
      norm_type: ``"layernorm"`` or ``"rmsnorm"`` (Zhang & Sennrich 2019; no centering, no
        bias), for every norm of the model.
      residual: ``"standard"`` (``x + F``), ``"rezero"`` (``x + α F`` with a learned α per
        sub-layer, 0 at init; Bachlechner et al. 2020), ``"rezero_ramp"`` (the same α as a
        non-trained `ResidualGate` raised by ``1/rezero_ramp_steps`` per step to 1: Su, post 8)
        or ``"deepnorm"`` (``LN(α x + G)``, with β-scaled init; DeepNet, needs ``norm="post"``).
        See `jaxformer.residual`.
      rezero_ramp_steps: steps for ``"rezero_ramp"``'s α to reach 1.
      weight_init: how Dense kernels are drawn: ``"normal"`` (HF BERT, N(0, initializer_range²)),
        ``"truncated_normal"`` (bert4keras' ±2σ truncation, variance-corrected so the std *is*
        initializer_range), or LeCun / Xavier / He variance scaling (``"lecun_normal"``, ...).
        Embedding tables keep N(0, initializer_range²) in every case (a norm follows them).
      parametrization: ``"standard"``; ``"ntk"`` (kernels N(0, 1), each Dense output times
        ``1/sqrt(fan_in)``: post 8's NTK parametrization; needs ``weight_init="normal"``, which it
        reinterprets as std 1); ``"mup"`` (μP, Yang et al. 2022: variance-scaling init, logits
        times ``sqrt(D_base)/D``, the tied LM readout times ``1/width_mult``; pair it with
        `jaxformer.train.mup_lr_multipliers` for Adam).
      attention_scale: the logit scale: ``"sqrt"`` (1/√D), ``"t5"`` (none on the logits, the
        q kernel's init divided by √D instead: T5 / Mesh TF), ``"none"`` (post 8's bug: neither),
        ``"mup"`` (√D_base / D), or ``"auto"`` (``"mup"`` under μP, else ``"sqrt"``).
      mup_base_width: E_base, the width at which μP equals the standard parametrization.
      scan_layers: run the blocks as one ``lax.scan`` over their stacked parameters instead of
        an unrolled Python loop. Same maths and parameters (the blocks stay separate modules, so
        checkpoints do not change); XLA compiles one block instead of L, and cannot fuse the
        residual stream's cotangent chain across blocks. That chain is why an unrolled Pre-LN
        stack compiles and runs several times slower than Post-LN on CPU at 24+ blocks
        (`benchmarks/bench_scan_layers.py`); elsewhere the scan costs a few percent on CPU.
        Needs identical blocks (always true here); a compute option, so it exports to HF.
      dtype: the compute dtype of activations and matmul inputs (``"float32"``,
        ``"bfloat16"``, ``"float16"``). LayerNorm statistics, softmax, the losses and the
        optimiser state stay fp32 whatever it is.
      param_dtype: the storage dtype of the parameters. ``PRECISION_POLICIES`` names the pairs:
        ``"fp32"``, ``"bf16"`` (pure bf16) and ``"mixed_bf16"`` (bf16 compute, fp32 parameters,
        which the train step keeps as master weights); `with_precision` applies one.
      matmul_precision: ``precision=`` of every matmul: ``"default"`` (jax's
        ``jax_default_matmul_precision``, else the backend's default: fp32 matmuls run as TF32 on
        NVIDIA Ampere and later, and as one bf16 pass on TPU), ``"high"`` (TF32 on NVIDIA, three
        bf16 passes on TPU) or ``"highest"`` (full fp32 everywhere). CPUs compute fp32 at full
        precision under all three. bf16 inputs are unaffected.
      attention_impl: how softmax attention runs: ``"xla"`` (`jaxformer.attention.
        softmax_attention`), ``"fused"`` (`jax.nn.dot_product_attention`: cuDNN's fused kernel
        on NVIDIA GPUs for bf16/fp16, XLA elsewhere; it cannot drop attention weights, so a
        training pass with ``attention_dropout > 0`` falls back to ``"xla"``), ``"flash"``
        (`jaxformer.flash_attention`, Pallas, with the kit's dropout masks) or ``"auto"`` (the
        fastest path measured for the backend: `jaxformer.models.attention_path` names it).
      remat: which activations of each block the backward pass recomputes instead of storing:
        ``"none"``, ``"block"`` (everything but the block inputs), ``"dots_saveable"`` (keep
        matmul outputs), ``"dots_with_no_batch_dims_saveable"`` (keep only the weight matmuls'
        outputs, not the attention scores).
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
    rope_base: float = 10000.0
    rope_layout: str = "interleaved"
    rotary_value: bool = False
    embedding_size: int | None = None
    rope_axes: int = 1
    causal: bool = False
    linear_feature_map: str = "elu+1"
    linear_normalize: str = "divide"
    linear_mode: str = "auto"
    linear_chunk_size: int = 64
    norm_type: str = "layernorm"
    residual: str = "standard"
    rezero_ramp_steps: int = 1000
    weight_init: str = "normal"
    parametrization: str = "standard"
    attention_scale: str = "auto"
    mup_base_width: int | None = None
    scan_layers: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"
    matmul_precision: str = "default"
    attention_impl: str = "auto"
    remat: str = "none"

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
        if self.embedding_size is not None and (
            not isinstance(self.embedding_size, int) or isinstance(self.embedding_size, bool)
            or self.embedding_size < 1
        ):
            raise ValueError(
                f"EncoderConfig.embedding_size must be None or a positive int, got {self.embedding_size!r}"
            )
        if not self.rope_base > 1:
            raise ValueError(f"EncoderConfig.rope_base must be > 1, got {self.rope_base!r}")
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
            "rope_layout": ROPE_LAYOUTS,
            "linear_feature_map": tuple(FEATURE_MAPS),
            "linear_normalize": LINEAR_NORMALIZERS,
            "linear_mode": LINEAR_MODES,
            "norm_type": NORM_TYPES,
            "residual": RESIDUAL_KINDS,
            "weight_init": WEIGHT_INITS,
            "parametrization": PARAMETRIZATIONS,
            "attention_scale": ATTENTION_SCALES,
            "dtype": DTYPES,
            "param_dtype": DTYPES,
            "matmul_precision": MATMUL_PRECISIONS,
            "attention_impl": ATTENTION_IMPLS,
            "remat": REMAT_POLICIES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"EncoderConfig.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}"
                )
        if (not isinstance(self.rope_axes, int) or isinstance(self.rope_axes, bool)
                or self.rope_axes < 1):
            raise ValueError(f"EncoderConfig.rope_axes must be a positive int, got {self.rope_axes!r}")
        if self.position in ROTARY_POSITIONS and self.head_dim % 2:
            raise ValueError(
                f"EncoderConfig.position={self.position!r} rotates pairs of features, so the head "
                f"dim hidden_size/num_heads={self.head_dim} must be even"
            )
        if self.position in ROTARY_POSITIONS and self.head_dim % (2 * self.rope_axes):
            raise ValueError(
                f"EncoderConfig.rope_axes={self.rope_axes} splits the head dim "
                f"hidden_size/num_heads={self.head_dim} into {self.rope_axes} groups of pairs, so "
                f"it must be a multiple of 2*rope_axes={2 * self.rope_axes}"
            )
        if (not isinstance(self.linear_chunk_size, int) or isinstance(self.linear_chunk_size, bool)
                or self.linear_chunk_size < 1):
            raise ValueError(
                f"EncoderConfig.linear_chunk_size must be a positive int, got {self.linear_chunk_size!r}")
        if self.attention == "linear" and self.attention_impl not in ("auto", "xla"):
            raise ValueError(
                f"EncoderConfig.attention_impl={self.attention_impl!r} chooses a softmax "
                f"implementation; attention='linear' takes 'auto' (or 'xla')")
        if self.attention == "linear" and self.attention_dropout:
            raise ValueError(
                f"EncoderConfig.attention='linear' has no attention probabilities to drop, so "
                f"attention_dropout must be 0, got {self.attention_dropout!r}")
        if self.attention == "linear" and self.causal and self.linear_mode == "parallel":
            raise ValueError(
                "EncoderConfig.linear_mode='parallel' is non-causal; with causal=True use "
                "'auto', 'chunked', 'scan' or 'quadratic'")
        self._check_init_and_norm()
        self._check_flags()
        if self.rotary_value and self.position != "rope":
            raise ValueError(
                f"EncoderConfig.rotary_value=True needs position='rope', got position={self.position!r}"
            )

    def _check_flags(self) -> None:
        for name in ("use_pooler", "causal", "rotary_value", "scan_layers"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"EncoderConfig.{name} must be a bool, got {value!r}")

    def _check_init_and_norm(self) -> None:
        """The combinations of norm, residual, init and parametrization that make sense."""
        if (not isinstance(self.rezero_ramp_steps, int) or isinstance(self.rezero_ramp_steps, bool)
                or self.rezero_ramp_steps < 1):
            raise ValueError(f"EncoderConfig.rezero_ramp_steps must be a positive int, got "
                             f"{self.rezero_ramp_steps!r}")
        if self.residual == "deepnorm" and self.norm != "post":
            raise ValueError(f"EncoderConfig.residual='deepnorm' is a Post-LN scheme "
                             f"(x <- LN(alpha x + G(x))), so it needs norm='post', got "
                             f"norm={self.norm!r}")
        if self.parametrization == "ntk" and self.weight_init != "normal":
            raise ValueError(f"EncoderConfig.parametrization='ntk' draws kernels from N(0, 1), so "
                             f"weight_init must be 'normal', got {self.weight_init!r}")
        if self.parametrization == "mup":
            if self.weight_init not in VARIANCE_SCALING_INITS:
                raise ValueError(f"EncoderConfig.parametrization='mup' needs a width-aware "
                                 f"weight_init, one of {list(VARIANCE_SCALING_INITS)}, got "
                                 f"{self.weight_init!r}")
            base = self.mup_base_width
            if (not isinstance(base, int) or isinstance(base, bool) or base < 1
                    or base % self.num_heads):
                raise ValueError(f"EncoderConfig.parametrization='mup' needs mup_base_width, a "
                                 f"positive multiple of num_heads={self.num_heads}, got {base!r}")
            if self.attention_scale not in ("auto", "mup"):
                raise ValueError(f"EncoderConfig.parametrization='mup' scales logits by "
                                 f"sqrt(D_base)/D, so attention_scale must be 'auto' or 'mup', "
                                 f"got {self.attention_scale!r}")
        elif self.mup_base_width is not None:
            raise ValueError(f"EncoderConfig.mup_base_width={self.mup_base_width!r} is used only "
                             f"by parametrization='mup', got {self.parametrization!r}")
        elif self.attention_scale == "mup":
            raise ValueError("EncoderConfig.attention_scale='mup' needs parametrization='mup', "
                             f"got {self.parametrization!r}")
        if self.attention == "linear" and self.attention_scale not in ("auto", "sqrt"):
            raise ValueError(f"EncoderConfig.attention='linear' has no logits to scale, so "
                             f"attention_scale must be 'auto', got {self.attention_scale!r}")

    @property
    def resolved_attention_scale(self) -> str:
        """`attention_scale` with ``"auto"`` resolved: ``"mup"`` under μP, else ``"sqrt"``."""
        if self.attention_scale != "auto":
            return self.attention_scale
        return "mup" if self.parametrization == "mup" else "sqrt"

    @property
    def logit_scale(self) -> float:
        """The factor on ``q·k``: 1/√D, 1 (``"t5"``, ``"none"``) or √D_base/D (μP, Yang et al.
        2022 §B: attention logits scale as 1/D so they stay O(1) as q, k align in training;
        equal to 1/√D at the base width)."""
        kind = self.resolved_attention_scale
        if kind == "sqrt":
            return 1.0 / math.sqrt(self.head_dim)
        if kind == "mup":
            base_head_dim = self.mup_base_width // self.num_heads
            return math.sqrt(base_head_dim) / self.head_dim
        return 1.0

    @property
    def width_mult(self) -> float:
        """E / E_base under μP, else 1."""
        return self.hidden_size / self.mup_base_width if self.parametrization == "mup" else 1.0

    @property
    def deepnorm_alpha_beta(self) -> tuple[float, float]:
        """DeepNorm's ``(α, β)`` for an encoder of ``num_layers`` blocks; ``(1, 1)`` otherwise."""
        if self.residual != "deepnorm":
            return 1.0, 1.0
        c = deepnorm_constants(encoder_layers=self.num_layers)
        return c["encoder_alpha"], c["encoder_beta"]

    @property
    def head_dim(self) -> int:
        """D, the per-head width ``E / H``."""
        return self.hidden_size // self.num_heads

    @property
    def embedding_width(self) -> int:
        """E_emb, the width of the embedding tables (``embedding_size`` or ``hidden_size``)."""
        return self.hidden_size if self.embedding_size is None else self.embedding_size

    def replace(self, **changes: Any) -> "EncoderConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_precision(self, policy: str) -> "EncoderConfig":
        """A copy with the ``dtype`` / ``param_dtype`` pair of a named policy:
        ``"fp32"``, ``"bf16"`` or ``"mixed_bf16"`` (`PRECISION_POLICIES`)."""
        if policy not in PRECISION_POLICIES:
            raise ValueError(f"precision policy must be one of {list(PRECISION_POLICIES)}, "
                             f"got {policy!r}")
        return self.replace(**PRECISION_POLICIES[policy])

    @property
    def precision_policy(self) -> str:
        """The name of this config's ``(dtype, param_dtype)`` pair, or ``"custom"``."""
        pair = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        return next((name for name, p in PRECISION_POLICIES.items() if p == pair), "custom")

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

    @classmethod
    def roformer_base(cls, **overrides: Any) -> "EncoderConfig":
        """Chinese RoFormer-base (Su et al. 2021; ZhuiyiTechnology/roformer): BERT-base shape with
        RoPE instead of a position table, V=50000 (word-level WoBERT vocab), trained to T=1536,
        no pooler."""
        base = dict(vocab_size=50000, max_position_embeddings=1536, type_vocab_size=2,
                    position="rope", use_pooler=False)
        return cls(**{**base, **overrides})

    # --- Hugging Face config.json (the rename table lives in `jaxformer.models.hf_config`) ---
    @classmethod
    def from_hf(cls, source: str | Path | dict[str, Any], **overrides: Any) -> "EncoderConfig":
        """Build from an HF ``config.json`` (a path to the file or its directory, or a dict)."""
        from jaxformer.models.hf_config import config_from_hf

        return config_from_hf(cls, source, **overrides)

    @property
    def hf_model_type(self) -> str:
        """The HF ``model_type`` this config exports to: ``"bert"`` or ``"roformer"``."""
        return "roformer" if self.position == "rope" else "bert"

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` dict that transformers' `BertModel` (``position="absolute"``) or
        `RoFormerModel` (``position="rope"``) reads.

        Raises:
          ValueError: naming the field when the config has no HF equivalent.
        """
        from jaxformer.models.hf_config import config_to_hf

        return config_to_hf(self)
