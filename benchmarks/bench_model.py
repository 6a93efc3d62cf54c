"""python -m benchmarks.bench_model [--quick] [--out results] [--precision POLICY ...] [--torch-compile]

The whole encoder, forward pass and train step, jaxformer (one jitted function) against Hugging
Face PyTorch in the same process and at the same precision policy, with achieved FLOP/s, MFU and
memory:

- forward: `Encoder` -> last_hidden_state vs `BertModel` (attn_implementation "eager" and
  "sdpa", the HF default), identical weights (exported with `to_hf_state_dict`), so the
  `max abs diff` column is also a parity check;
- train: one optimiser step of sequence classification (C=2) with BERT's dropout 0.1: the kit's
  `make_train_step` (AdamW, clip 1.0, state donated) vs `BertForSequenceClassification` (sdpa)
  with `loss.backward()`, `clip_grad_norm_(1.0)`, `torch.optim.AdamW`, `zero_grad`;
- "torch compile": the sdpa model under `torch.compile`, its own contender, on accelerators
  (on CPU with ``--torch-compile``). Its first call (the compilation) is timed on its own; once
  a first call takes more than `COMPILE_LIMIT_S` (or all of them `COMPILE_TOTAL_S`), it is
  dropped for the remaining cases, and the rows and notes say so.

Precision policies (``--precision``, one or more; ``--dtype float32|bfloat16`` is a deprecated
alias of ``fp32|bf16``), jaxformer from `EncoderConfig.with_precision` and torch to match:

- ``fp32``: fp32 everywhere; on a GPU jaxformer's matmuls at ``matmul_precision="highest"`` and
  torch with ``torch.backends.cuda.matmul.allow_tf32 = False`` (no TF32 on either side);
- ``tf32``: the same fp32 weights with TF32 matmuls on both sides (jaxformer
  ``matmul_precision="default"``, torch ``allow_tf32 = True``);
- ``bf16``: pure bf16, weights too (torch: ``model.to(torch.bfloat16)``);
- ``mixed_bf16``: bf16 compute, fp32 weights (torch: ``torch.autocast(..., torch.bfloat16)``).

The default is ``fp32`` on CPU and ``bf16 mixed_bf16`` on an accelerator. Torch runs on CUDA
when jax runs on a GPU (models and inputs on the device, every timed call synchronised).

FLOPs are analytic (`jaxformer.flops`, kit convention: 2 per multiply-add, matmuls only,
L x one layer, x3 for a train step); XLA's own count of the compiled function is reported next
to them (`xla/analytic`, which also counts elementwise work and, for a train step, the optimiser).
MFU = analytic FLOPs / median time / peak, with the peak from `jaxformer.peaks.device_peak`
(CPU: the best jitted f32 matmul measured in the same run). Torch is skipped (with a note) when it
is not installed or, on an accelerator, has no CUDA build.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import (Column, Prepared, Timing, bench_main, memory_bytes, prepare_jax,
                                prepare_torch, save_figure, time_interleaved, torch_peak_memory,
                                write_report)
from jaxformer.flops import LayerShape, layer_flops, xla_cost

NAME = "model"
TITLE = "Encoder forward and train step: jaxformer (jax.jit) vs HF transformers (PyTorch)"
GOAL_FORWARD = 1.2  # P1 (CPU, fp32): torch time / jaxformer time, BERT-base forward
GOAL_TRAIN = 1.1  # P1 (CPU, fp32): the same for the train step
GOAL_GPU = 1.3  # P1-GPU: torch sdpa time / jaxformer time at the same policy, forward and train
GOAL_GPU_MFU_FORWARD = 0.5  # P2-GPU: bf16 MFU at B=32 T=512
GOAL_GPU_MFU_TRAIN = 0.4

# Precision policies: jaxformer's `EncoderConfig.with_precision` names, plus "tf32", which is
# "fp32" with TF32 matmuls on both sides.
PRECISIONS = ("fp32", "tf32", "bf16", "mixed_bf16")
CPU_PRECISIONS = ("fp32",)
ACCELERATOR_PRECISIONS = ("bf16", "mixed_bf16")
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16"}  # the deprecated --dtype values

# (kind, config, B, T). Quick is what `jaxformer bench` runs by default on a 2-core CPU.
QUICK_CASES: tuple[tuple[str, str, int, int], ...] = (
    ("forward", "tiny", 8, 128),
    ("forward", "bert_base", 4, 128),
    ("forward", "bert_base", 1, 512),
    ("train", "tiny", 8, 128),
    ("train", "bert_base", 4, 128),
    ("train", "bert_base", 1, 512),
)
FULL_CASES = QUICK_CASES + (
    ("forward", "bert_base", 8, 512),
    ("train", "bert_base", 8, 128),
)
# On an accelerator the CPU shapes are far too small to fill it, and tiny measures only launch
# overhead; forward cases come first, so the forward models are freed before any train step.
ACCELERATOR_CASES: tuple[tuple[str, str, int, int], ...] = (
    ("forward", "bert_base", 64, 128),
    ("forward", "bert_base", 32, 512),
    ("train", "bert_base", 64, 128),
    ("train", "bert_base", 32, 512),
)
MIN_REPEATS = 5
BUDGET_S = 8.0  # total timed seconds per case (all contenders), never fewer than MIN_REPEATS
# CPU: one warm-up, up to 25 calls within the budget. Accelerator: the reference torch timings'
# protocol, 3 warm-ups and 20 forward / 10 train calls.
CPU_TIMING = {"warmup": 1, "forward": 25, "train": 25}
ACCELERATOR_TIMING = {"warmup": 3, "forward": 20, "train": 10}
LEARNING_RATE = 1e-5
COMPILE_LIMIT_S = 60.0  # a torch.compile first call slower than this drops the contender
COMPILE_TOTAL_S = 90.0  # ... and so do first calls adding up to more than this in one run

COLUMNS: tuple[Column, ...] = (
    ("kind", "kind"),
    ("config", "config"),
    ("batch", "B"),
    ("seq", "T"),
    ("precision", "precision"),
    ("attention", "attention"),
    ("jax_ms", "jaxformer ms"),
    ("jax_iqr_ms", "IQR ms"),
    ("torch_eager_ms", "torch eager ms"),
    ("torch_sdpa_ms", "torch sdpa ms"),
    ("torch_compile_ms", "torch compile ms"),
    ("ratio_eager", "eager/jax"),
    ("ratio_sdpa", "sdpa/jax"),
    ("ratio_compile", "compile/jax"),
    ("jax_tok_s", "jax tok/s"),
    ("jax_tflops", "jax TFLOP/s"),
    ("mfu", "MFU"),
    ("torch_mfu", "torch MFU"),
    ("xla_ratio", "xla/analytic"),
    ("jax_compile_s", "compile s"),
    ("torch_compile_first_s", "torch compile s"),
    ("jax_temp_mib", "temp MiB"),
    ("jax_args_out_mib", "jax args+out MiB"),
    ("torch_peak_mib", "torch peak MiB"),
    ("spread_pct", "max IQR %"),
    ("max_abs_diff", "max abs diff vs HF"),
)

NOTES = (
    "ratio = torch median time / jaxformer median time (> 1: jaxformer faster), both at the same "
    f"precision policy. Goals (reported, never asserted; see report.md's goal table): CPU fp32 "
    f"BERT-base forward ≥ {GOAL_FORWARD}× and train step ≥ {GOAL_TRAIN}× (P1); on a GPU "
    f"≥ {GOAL_GPU}× against torch sdpa for both at B=64 T=128 and B=32 T=512 (P1-GPU) and a "
    f"bf16 MFU ≥ {GOAL_GPU_MFU_FORWARD:.0%} forward, ≥ {GOAL_GPU_MFU_TRAIN:.0%} train at B=32 T=512 "
    "(P2-GPU).",
    "Precision policies: fp32 = fp32 weights and compute (on a GPU jaxformer's matmuls at "
    "matmul_precision 'highest' and torch with torch.backends.cuda.matmul.allow_tf32 = False "
    "and cudnn.allow_tf32 = False: no TF32 on either side); tf32 = the same with TF32 matmuls on "
    "both sides (jaxformer 'default', torch allow_tf32 = True); bf16 = pure bf16 (torch: "
    "model.to(torch.bfloat16), whose AdamW then keeps bf16 moments, while jaxformer's train step "
    "keeps its optimiser state in fp32); mixed_bf16 = bf16 compute on fp32 weights (jaxformer: "
    "param_dtype float32, dtype bfloat16; torch: torch.autocast(device, torch.bfloat16) around "
    "the forward pass, backward and optimiser outside it, as "
    "https://pytorch.org/docs/stable/amp.html recommends).",
    "Times: CPU: median of ≥ 5 timed calls after one warm-up; accelerator: 3 warm-ups, then the "
    "median of up to 20 forward / 10 train calls; IQR and every sample are in the JSON. Each "
    "torch call on CUDA ends with torch.cuda.synchronize() inside the timed interval and the "
    "device is synchronised before the clock starts; jaxformer calls block on their result. "
    "Forward: the contenders of a case are called round-robin, so background load hits them "
    "alike. Train step: each contender is timed alone, one after the other, because a step "
    "right after the other library's step was measured bimodal on CPU (jaxformer at B=1, "
    "T=512: 2110 or 2620 ms interleaved, 2184 ± 56 ms alone; torch 2499 vs 2412 ms), apparently "
    "re-faulting the GiB of activations the other one just freed. Compile time is excluded "
    "from the median and reported on its own.",
    "torch compile: torch.compile(model, dynamic=False) of the sdpa model (sharing its weights "
    "and, for training, its optimiser; the optimiser step itself stays eager), caches reset "
    "before each case so that 'torch compile s' is that case's first call, compilation "
    f"included. It runs on accelerators (on CPU only with --torch-compile) and is dropped for "
    f"the remaining cases once a first call takes more than {COMPILE_LIMIT_S:g} s or the first "
    f"calls more than {COMPILE_TOTAL_S:g} s in all.",
    "attention = `jaxformer.models.attention_path(cfg, deterministic=...)`, the kernel the "
    "jitted function runs: forward deterministic, train with dropout (BERT's attention dropout "
    "0.1 can force a fallback, named in parentheses).",
    "Memory: temp MiB = compiled.memory_analysis().temp_size_in_bytes of the jaxformer function "
    "(scratch only); jax args+out MiB = its argument + output bytes (weights, batch, optimiser "
    "state for a train step, of which the donated part is reused as output: the alias bytes in "
    "the JSON). torch peak MiB = torch.cuda.max_memory_allocated() over the timed train calls "
    "after torch.cuda.reset_peak_memory_stats(): weights, gradients, AdamW moments and "
    "activations of the sdpa model (the forward models are freed first); n/a on CPU. jax and "
    "torch allocate from separate pools on one GPU, so neither number includes the other.",
    "Analytic FLOPs: L × `layer_flops(LayerShape(E, H, F, T, B))['matmul_total']` (embedding "
    "lookups 0, pooler and classifier not counted), × 3 for the train step. MFU = those FLOPs / "
    "median time / peak (see the peak line of report.md). torch MFU uses the same FLOPs and peak "
    "and the faster of torch eager and sdpa.",
    "xla/analytic = XLA's cost_analysis() FLOPs of the compiled jaxformer function / analytic "
    "matmul + elementwise FLOPs (`layer_flops` elementwise_total per layer); a train step "
    "also holds the optimiser's and the dropout masks' elementwise work, which the analytic "
    "count leaves out.",
    "Train step: dropout 0.1 everywhere as in BERT; jaxformer draws dropout masks with its "
    "counter-hash (`jaxformer.random_bits`), torch with Philox. Both clip the global grad norm "
    "to 1 and run AdamW (torch: all parameters decayed; jaxformer: biases and LayerNorm not).",
    "tiny runs with max_position_embeddings raised to the longest T benchmarked.",
)


# --------------------------------------------------------------------------- precision


def precision_from_dtype(precision: str | Sequence[str] | None, dtype: str | None
                         ) -> str | Sequence[str] | None:
    """`precision`, or the policy the deprecated ``--dtype`` alias stands for (not both)."""
    if dtype is None:
        return precision
    if precision is not None:
        raise ValueError(f"--dtype is a deprecated alias of --precision: give only one, got "
                         f"--precision {precision!r} and --dtype {dtype!r}")
    if dtype not in DTYPE_ALIASES:
        raise ValueError(f"--dtype must be one of {list(DTYPE_ALIASES)}, got {dtype!r}")
    return DTYPE_ALIASES[dtype]


def resolve_precisions(precision: str | Sequence[str] | None = None, dtype: str | None = None,
                       *, accelerator: bool) -> tuple[str, ...]:
    """The policies to run: `precision` (one name or several), else the deprecated `dtype`
    alias, else the platform's default (`CPU_PRECISIONS` / `ACCELERATOR_PRECISIONS`)."""
    precision = precision_from_dtype(precision, dtype)  # validates the pair first
    if dtype is not None:
        warnings.warn(f"--dtype {dtype} is deprecated: use --precision {precision}",
                      FutureWarning, stacklevel=2)
    if precision is None:
        return ACCELERATOR_PRECISIONS if accelerator else CPU_PRECISIONS
    names = (precision,) if isinstance(precision, str) else tuple(precision)
    unknown = [p for p in names if p not in PRECISIONS]
    if unknown or not names:
        raise ValueError(f"--precision must be one or more of {list(PRECISIONS)}, got "
                         f"{list(names)!r}")
    return tuple(dict.fromkeys(names))


def jax_config(cfg: Any, precision: str, *, accelerator: bool) -> Any:
    """`cfg` at a precision policy of this benchmark (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    cfg = cfg.with_precision("fp32" if precision == "tf32" else precision)
    if precision == "tf32":
        return cfg.replace(matmul_precision="default")
    if precision == "fp32" and accelerator:
        # Full fp32 products, as torch computes them with TF32 switched off. (CPUs compute fp32
        # at full precision under every setting, so the CPU rows keep the config's default.)
        return cfg.replace(matmul_precision="highest")
    return cfg


@dataclasses.dataclass(frozen=True)
class TorchPolicy:
    """How the torch contenders run one precision policy."""

    bf16_weights: bool  # model.to(torch.bfloat16)
    autocast: bool  # torch.autocast(device, torch.bfloat16) around the forward pass
    tf32: bool  # torch.backends.{cuda.matmul,cudnn}.allow_tf32
    description: str


TORCH_POLICIES = {
    "fp32": TorchPolicy(False, False, False, "fp32, TF32 off"),
    "tf32": TorchPolicy(False, False, True, "fp32 weights, TF32 matmuls"),
    "bf16": TorchPolicy(True, False, False, "model.to(bfloat16)"),
    "mixed_bf16": TorchPolicy(False, True, False, "autocast bf16, fp32 weights"),
}


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """Set torch's TF32 switches for a block and restore them after it."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# --------------------------------------------------------------------------- torch.compile


@dataclasses.dataclass
class CompileGate:
    """Decides whether the "torch compile" contender still runs.

    `first_call` times a compiled callable's first call (which compiles it) on `clock`; the
    contender is dropped for every later case once one first call took more than `limit_s`, or
    all of them together more than `total_s`. `dropped` then says why.
    """

    limit_s: float = COMPILE_LIMIT_S
    total_s: float | None = COMPILE_TOTAL_S
    clock: Callable[[], float] = time.perf_counter
    spent_s: float = 0.0
    dropped: str | None = None

    @property
    def active(self) -> bool:
        return self.dropped is None

    def first_call(self, case: str, call: Callable[[], Any]) -> float:
        """Run `call` once and return its seconds; may drop the contender for later cases."""
        if not self.active:
            raise RuntimeError(f"torch compile was dropped already ({self.dropped}); "
                               f"first_call({case!r}) must not run")
        t0 = self.clock()
        call()
        seconds = self.clock() - t0
        self.spent_s += seconds
        if seconds > self.limit_s:
            self.dropped = (f"torch.compile's first call took {seconds:.0f} s at {case} (limit "
                            f"{self.limit_s:g} s): torch compile dropped for the remaining cases")
        elif self.total_s is not None and self.spent_s > self.total_s:
            self.dropped = (f"torch.compile's first calls took {self.spent_s:.0f} s in all by "
                            f"{case} (limit {self.total_s:g} s): torch compile dropped for the "
                            "remaining cases")
        return seconds


def _torch_compile(model: Any) -> Any:
    import torch

    # dynamic=False: one static-shape graph per case (each case resets the caches first), as a
    # benchmark of fixed shapes wants; a dynamic-shape graph would be a different contender.
    return torch.compile(model, dynamic=False)


# --------------------------------------------------------------------------- models


def _config(name: str, max_seq: int) -> Any:
    from jaxformer.models import EncoderConfig

    cfg = getattr(EncoderConfig, name)()
    if cfg.max_position_embeddings < max_seq:
        cfg = cfg.replace(max_position_embeddings=max_seq)
    return cfg


def model_flops(cfg: Any, batch: int, seq: int, *, training: bool) -> dict[str, float]:
    """Analytic FLOPs of the encoder stack: {"matmul", "elementwise"} (L layers)."""
    shape = LayerShape(d_model=cfg.hidden_size, heads=cfg.num_heads, ffn=cfg.intermediate_size,
                       seq_len=seq, batch=batch,
                       activation="gelu" if cfg.hidden_act == "gelu" else cfg.hidden_act)
    per_layer = layer_flops(shape, training=training)
    # The embedding stage: word + position + segment (2 adds) and its LayerNorm (7 per element,
    # the constant jaxformer.flops uses), on [B, T, E]; the backward pass doubles it.
    embed = (2 if training else 1) * batch * seq * cfg.hidden_size * (2 + 7)
    return {"matmul": cfg.num_layers * per_layer["matmul_total"],
            "elementwise": cfg.num_layers * per_layer["elementwise_total"] + embed}


def torch_status() -> tuple[bool, str]:
    """(whether torch baselines run here, why not)."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return False, "torch/transformers not installed: torch columns skipped"
    if jax.devices()[0].platform != "cpu":
        import torch

        if not torch.cuda.is_available():
            return False, ("torch has no CUDA device here (CPU build): comparing it with an "
                           "accelerator would be meaningless, torch columns skipped")
    return True, ""


def torch_device() -> str:
    """Where the torch contenders run: CUDA when jax runs on a GPU, else the CPU."""
    return "cuda" if jax.devices()[0].platform == "gpu" else "cpu"


def _inputs(cfg: Any, batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Token 0 is [PAD] in BERT vocabularies; start at 1 so every row is real text to both.
    return {"input_ids": rng.integers(1, cfg.vocab_size, size=(batch, seq), dtype=np.int64),
            "attention_mask": np.ones((batch, seq), dtype=np.int64),
            "token_type_ids": np.zeros((batch, seq), dtype=np.int64),
            "labels": rng.integers(0, 2, size=(batch,), dtype=np.int64)}


class _Models:
    """One kit classifier per (config, policy) (its encoder serves the forward cases) and,
    lazily, the HF models with the same encoder weights on the torch device."""

    def __init__(self, config: str, max_seq: int, precision: str, *, accelerator: bool,
                 device: str) -> None:
        from flax import nnx

        from jaxformer.models import Encoder
        from jaxformer.models.heads import SequenceClassifier

        self.config_name, self.precision, self.device = config, precision, device
        self.torch_policy = TORCH_POLICIES[precision]
        self.cfg = jax_config(_config(config, max_seq), precision, accelerator=accelerator)
        self.classifier = SequenceClassifier(Encoder(self.cfg, rngs=nnx.Rngs(params=0)), 2,
                                             rngs=nnx.Rngs(params=1))
        self._hf: dict[tuple[str, str], Any] = {}
        self._opt: dict[tuple[str, str], Any] = {}
        self._state: dict[str, Any] | None = None

    def _exported(self) -> dict[str, Any]:
        import torch

        from jaxformer.models.pretrained import to_hf_state_dict

        if self._state is None:
            # Through fp32 on the host: numpy's bfloat16 has no torch counterpart, and bf16 ->
            # fp32 is exact, so a bf16 torch model gets exactly the kit's weights back.
            self._state = {
                k: torch.from_numpy(np.array(v, dtype=np.float32 if jnp.issubdtype(
                    v.dtype, jnp.floating) else v.dtype, copy=True))
                for k, v in to_hf_state_dict(self.classifier.encoder).items()}
        return self._state

    def hf(self, kind: str, impl: str) -> Any:
        import torch
        from transformers import BertConfig, BertForSequenceClassification, BertModel

        if (kind, impl) in self._hf:
            return self._hf[(kind, impl)]
        hf_cfg = BertConfig(**{**self.cfg.to_hf_dict(), "attn_implementation": impl,
                               "num_labels": 2})
        if kind == "forward":
            model = BertModel(hf_cfg)
            model.load_state_dict(self._exported(), strict=False)
            model = model.eval()
        else:
            model = BertForSequenceClassification(hf_cfg)
            model.bert.load_state_dict(self._exported(), strict=False)
            model = model.train()
        model = model.to(self.device)
        if self.torch_policy.bf16_weights:
            model = model.to(torch.bfloat16)
        self._hf[(kind, impl)] = model
        if kind == "train":
            # eps 1e-6 as BERT; created with the model so the torch.compile contender can share
            # weights and optimiser with the eager one.
            self._opt[(kind, impl)] = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE,
                                                        weight_decay=0.01, eps=1e-6)
        return model

    def optimizer(self, kind: str, impl: str) -> Any:
        self.hf(kind, impl)
        return self._opt[(kind, impl)]

    def keep_only(self, kind: str) -> None:
        """Free the HF models of other kinds, so that torch's peak memory of a train step
        counts the train model alone."""
        stale = [k for k in self._hf if k[0] != kind]
        for k in stale:
            self._hf.pop(k)
            self._opt.pop(k, None)
        if stale:
            _free_torch(self.device)

    def release(self) -> None:
        self._hf.clear()
        self._opt.clear()
        self._state = None
        _free_torch(self.device)


def _free_torch(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _autocast(models: _Models) -> Any:
    import torch

    if not models.torch_policy.autocast:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(models.device).type, dtype=torch.bfloat16)


def _jax_forward(models: _Models, x: dict[str, np.ndarray]) -> Prepared:
    from flax import nnx

    graphdef, state = nnx.split(models.classifier.encoder)

    def forward(state: Any, ids: jax.Array, mask: jax.Array, tt: jax.Array) -> jax.Array:
        out = nnx.merge(graphdef, state)(ids, attention_mask=mask, token_type_ids=tt,
                                          deterministic=True)
        return out.last_hidden_state

    args = [jnp.asarray(x[k], jnp.int32) for k in ("input_ids", "attention_mask", "token_type_ids")]
    return prepare_jax(forward, state, *args)


def _jax_train(models: _Models, x: dict[str, np.ndarray]) -> Prepared:
    from jaxformer.train.finetune import classifier_loss
    from jaxformer.train.optim import adamw
    from jaxformer.train.step import init_train_state, make_train_step

    # The classifier already holds its parameters in the policy's param_dtype; make_train_step
    # keeps the optimiser state in fp32 whatever they are.
    tx = adamw(LEARNING_RATE, total_steps=1000, warmup_steps=0)
    graphdef, state = init_train_state(models.classifier, tx)
    step = make_train_step(graphdef, tx, classifier_loss)
    batch = {k: jnp.asarray(x[k], jnp.int32) for k in ("input_ids", "attention_mask", "labels")}
    key = jax.random.key(0)
    t0 = time.perf_counter()
    lowered = step.jitted.lower(state, batch, key)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    box = {"state": state}

    def call() -> Any:
        # The state is donated: thread it from call to call, as a training loop does.
        box["state"], metrics = compiled(box["state"], batch, key)
        return jax.block_until_ready(metrics["loss"])

    memory = memory_bytes(compiled)
    return Prepared(call, lower_s=t1 - t0, compile_s=t2 - t1, temp_bytes=(memory or {}).get("temp"),
                    xla=xla_cost(compiled), memory=memory)


def _torch_inputs(x: dict[str, np.ndarray], keys: Sequence[str], device: str) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(x[k]).to(device) for k in keys}


def _torch_forward(models: _Models, x: dict[str, np.ndarray], impl: str,
                   compiled: bool = False) -> Prepared:
    hf = models.hf("forward", impl)
    model = _torch_compile(hf) if compiled else hf
    tx = _torch_inputs(x, ("input_ids", "attention_mask", "token_type_ids"), models.device)

    def forward() -> Any:
        with _autocast(models):
            return model(**tx).last_hidden_state

    return prepare_torch(forward, device=models.device)


def _torch_train(models: _Models, x: dict[str, np.ndarray], impl: str,
                 compiled: bool = False) -> Prepared:
    import torch

    hf = models.hf("train", impl)
    opt = models.optimizer("train", impl)
    model = _torch_compile(hf) if compiled else hf
    tx = _torch_inputs(x, ("input_ids", "attention_mask", "token_type_ids", "labels"),
                       models.device)

    def call() -> Any:
        with _autocast(models):
            loss = model(**tx).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return prepare_torch(call, device=models.device, inference=False)


def _max_abs_diff(a: Any, b: Any) -> float:
    theirs = b.detach().float().cpu().numpy()
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(theirs, np.float64))))


def _mib(value: int | None) -> float | None:
    return None if value is None else value / 2**20


def _attention_path(cfg: Any, *, deterministic: bool) -> str:
    from jaxformer.models import attention_path

    return attention_path(cfg, deterministic=deterministic)


# --------------------------------------------------------------------------- run


def run(quick: bool = False, *, cases: Sequence[tuple[str, str, int, int]] | None = None,
        precision: str | Sequence[str] | None = None, dtype: str | None = None,
        budget_s: float = BUDGET_S, peak: float | None = None, min_repeats: int = MIN_REPEATS,
        torch_compile: bool | None = None, compile_gate: CompileGate | None = None,
        timing: dict[str, int] | None = None,
        on_row: Callable[[dict[str, Any]], None] | None = None,
        log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per (precision, kind, config, B, T). `peak` (FLOP/s) turns times into MFU;
    without it the MFU columns are None. `precision`: see `resolve_precisions` (`dtype` is its
    deprecated alias). `torch_compile`: the "torch compile" contender (default: on accelerators
    only), gated by `compile_gate`. `timing`: {"warmup", "forward", "train"} call counts
    (default `CPU_TIMING` / `ACCELERATOR_TIMING`). `on_row` sees each row as soon as its case
    is done (the suite saves it, so a run stopped by a time limit keeps it); `log` gets one line
    when a case starts and one when it ends (default: stderr), to show where the time goes."""
    log = _stderr if log is None else log
    on_accelerator = jax.devices()[0].platform != "cpu"
    precisions = resolve_precisions(precision, dtype, accelerator=on_accelerator)
    if cases is None:
        cases = ACCELERATOR_CASES if on_accelerator else (QUICK_CASES if quick else FULL_CASES)
    for kind, *_ in cases:
        if kind not in ("forward", "train"):
            raise ValueError(f"case kind must be 'forward' or 'train', got {kind!r}")
    timing = {**(ACCELERATOR_TIMING if on_accelerator else CPU_TIMING), **(timing or {})}
    use_torch, torch_note = torch_status()
    device = torch_device()
    if use_torch and device == "cpu":
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    compiling = use_torch and (on_accelerator if torch_compile is None else torch_compile)
    gate = (compile_gate or CompileGate()) if compiling else None
    rows: list[dict[str, Any]] = []
    for policy in precisions:
        with _tf32(TORCH_POLICIES[policy].tf32) if use_torch else contextlib.nullcontext():
            rows += _run_policy(policy, cases, budget_s=budget_s, peak=peak,
                                min_repeats=min_repeats, timing=timing, use_torch=use_torch,
                                torch_note=torch_note, device=device, gate=gate,
                                accelerator=on_accelerator, on_row=on_row, log=log)
    return rows


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run_policy(policy: str, cases: Sequence[tuple[str, str, int, int]], *, budget_s: float,
                peak: float | None, min_repeats: int, timing: dict[str, int], use_torch: bool,
                torch_note: str, device: str, gate: CompileGate | None, accelerator: bool,
                on_row: Callable[[dict[str, Any]], None] | None, log: Callable[[str], None]
                ) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    models: _Models | None = None
    for i, (kind, config, batch, seq) in enumerate(cases):
        if models is None or models.config_name != config:
            if models is not None:
                models.release()  # free the previous config's weights first
            longest = max(t for _, c, _, t in cases if c == config)
            models = _Models(config, longest, policy, accelerator=accelerator, device=device)
        m = models
        label = f"{kind} {config} B={batch} T={seq} {policy}"
        t_case = time.perf_counter()
        log(f"model: {label}: starting")
        x = _inputs(m.cfg, batch, seq, seed=i)
        calls = {"jax": (_jax_forward if kind == "forward" else _jax_train)(m, x)}
        compile_first_s = compile_note = None
        if use_torch:
            m.keep_only(kind)
            impls = ("eager", "sdpa") if kind == "forward" else ("sdpa",)
            maker = _torch_forward if kind == "forward" else _torch_train
            calls.update({impl: maker(m, x, impl) for impl in impls})
            if gate is not None and gate.active:
                import torch

                torch._dynamo.reset()  # this case's first call compiles: nothing cached
                compiled = maker(m, x, "sdpa", compiled=True)
                compile_first_s = gate.first_call(label, compiled.call)
                calls["compile"] = compiled  # paid for already: timed even if now dropped
                compile_note = gate.dropped
            elif gate is not None:
                compile_note = gate.dropped
        repeats = max(min_repeats, timing[kind])
        peaks: dict[str, int | None] = {}
        if kind == "forward":
            timings = time_interleaved(calls, warmup=timing["warmup"], repeats=repeats,
                                       budget_s=budget_s, min_repeats=min_repeats)
        else:
            # One contender at a time: a train step right after the other library's was
            # measured bimodal (jaxformer 2110 or 2620 ms at B=1, T=512, against 2184 ± 56 ms
            # alone), apparently re-faulting the memory the other one just freed.
            share = budget_s / len(calls)
            timings = {}
            for name, p in calls.items():
                with (torch_peak_memory(device) if name != "jax"
                      else contextlib.nullcontext({"bytes": None})) as peak_box:
                    timings[name] = time_interleaved({name: p}, warmup=timing["warmup"],
                                                     repeats=repeats, budget_s=share,
                                                     min_repeats=min_repeats)[name]
                peaks[name] = peak_box["bytes"]
        rows.append(_row(m, kind, config, batch, seq, calls, timings, peaks, peak=peak,
                         torch_note=torch_note, compile_first_s=compile_first_s,
                         compile_note=compile_note, device=device if use_torch else None))
        timed = sum(sum(t.times_s) for t in timings.values())
        first = ("" if compile_first_s is None
                 else f", torch.compile first call {compile_first_s:.1f} s")
        log(f"model: {label}: done in {time.perf_counter() - t_case:.1f} s (jax compile "
            f"{calls['jax'].compile_s or 0:.1f} s{first}, timed calls {timed:.1f} s)")
        if on_row is not None:
            on_row(rows[-1])
    if models is not None:
        models.release()
    return rows


def _row(m: _Models, kind: str, config: str, batch: int, seq: int, calls: dict[str, Prepared],
         timings: dict[str, Timing], peaks: dict[str, int | None], *, peak: float | None,
         torch_note: str, compile_first_s: float | None, compile_note: str | None,
         device: str | None) -> dict[str, Any]:
    tj = timings["jax"]
    flops = model_flops(m.cfg, batch, seq, training=kind == "train")
    xla = calls["jax"].xla
    memory = calls["jax"].memory or {}
    analytic_all = flops["matmul"] + flops["elementwise"]
    args_out = (memory["argument"] + memory["output"]
                if "argument" in memory and "output" in memory else None)
    row: dict[str, Any] = {
        "kind": kind, "config": config, "batch": batch, "seq": seq,
        "precision": m.precision, "dtype": m.cfg.dtype, "param_dtype": m.cfg.param_dtype,
        "matmul_precision": m.cfg.matmul_precision,
        "attention": _attention_path(m.cfg, deterministic=kind == "forward"),
        "torch_device": device, "torch_policy": None if device is None else
        m.torch_policy.description,
        "tokens": batch * seq,
        "jax_ms": 1e3 * tj.median_s, "jax_iqr_ms": 1e3 * tj.iqr_s,
        "jax_tok_s": batch * seq / tj.median_s,
        "analytic_flops": flops["matmul"], "analytic_elementwise_flops": flops["elementwise"],
        "jax_tflops": flops["matmul"] / tj.median_s / 1e12,
        "mfu": None if peak is None else flops["matmul"] / tj.median_s / peak,
        "xla_flops": None if xla is None else xla.flops,
        "xla_reliable": None if xla is None else xla.reliable,
        "xla_ratio": (None if xla is None or xla.flops is None else xla.flops / analytic_all),
        "jax_compile_s": tj.compile_s, "jax_lower_s": tj.lower_s,
        "jax_temp_mib": _mib(tj.temp_bytes),
        "jax_args_out_mib": _mib(args_out),
        "jax_alias_mib": _mib(memory.get("alias")),
        "torch_peak_mib": _mib(peaks.get("sdpa")),
        "torch_compile_peak_mib": _mib(peaks.get("compile")),
        "torch_compile_first_s": compile_first_s,
        "torch_compile_note": compile_note,
        "spread_pct": 100 * max(t.iqr_s / t.median_s for t in timings.values()),
        "torch_note": torch_note or None,
        "timing": dict(timings),
    }
    for impl in ("eager", "sdpa", "compile"):
        t = timings.get(impl)
        row[f"torch_{impl}_ms"] = None if t is None else 1e3 * t.median_s
        row[f"ratio_{impl}"] = None if t is None else t.median_s / tj.median_s
        row[f"ratio_{impl}_min"] = None if t is None else t.min_s / tj.min_s
    best_torch = min((timings[k].median_s for k in ("eager", "sdpa") if k in timings),
                     default=None)
    row["torch_mfu"] = (None if peak is None or best_torch is None
                        else flops["matmul"] / best_torch / peak)
    if kind == "forward" and "sdpa" in timings:
        row["max_abs_diff"] = max(_max_abs_diff(tj.output, timings[k].output)
                                  for k in ("eager", "sdpa"))
    else:
        row["max_abs_diff"] = None
    if kind == "train":
        row["jax_loss"] = float(tj.output)
        row["torch_loss"] = None if "sdpa" not in timings else float(timings["sdpa"].output)
    return row


def run_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Notes that depend on the run: why torch or torch compile did not run everywhere."""
    seen = dict.fromkeys(n for r in rows for n in (r.get("torch_note"), r.get("torch_compile_note"))
                         if n)
    return list(seen)


def write(rows: Sequence[dict[str, Any]], *, out_dir: str | os.PathLike[str], command: str
          ) -> tuple[Path, ...]:
    json_path, md_path = write_report(NAME, rows, columns=COLUMNS, title=TITLE, command=command,
                                      notes=[*NOTES, *run_notes(rows)], out_dir=out_dir)
    return json_path, md_path, plot_mfu(rows, json_path.with_name(f"{NAME}_mfu.png"))


def plot_mfu(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Bars of MFU per case, jaxformer next to the faster torch implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(dict.fromkeys(r.get("precision", r.get("dtype")) for r in rows))
    labels = [f"{r['kind']}\n{r['config']}\nB={r['batch']} T={r['seq']}"
              + (f"\n{r.get('precision')}" if len(policies) > 1 else "") for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(rows)), 4.0))
    jax_mfu = [100 * (r["mfu"] or 0.0) for r in rows]
    torch_mfu = [100 * (r["torch_mfu"] or 0.0) for r in rows]
    ax.bar(x - 0.2, jax_mfu, 0.4, label="jaxformer")
    if any(torch_mfu):
        ax.bar(x + 0.2, torch_mfu, 0.4, label="HF torch (faster eager impl)")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("MFU % (analytic matmul FLOPs / time / peak)")
    ax.set_title(f"{TITLE} ({', '.join(map(str, policies))})", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def add_precision_arguments(parser: argparse.ArgumentParser) -> None:
    """``--precision``, the deprecated ``--dtype`` and ``--torch-compile`` (shared with the
    suite's command line)."""
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=None,
                        metavar="POLICY",
                        help=f"precision policies of the model section, some of {PRECISIONS} "
                             f"(default: {' '.join(CPU_PRECISIONS)} on CPU, "
                             f"{' '.join(ACCELERATOR_PRECISIONS)} on an accelerator)")
    parser.add_argument("--dtype", default=None, choices=tuple(DTYPE_ALIASES),
                        help="deprecated alias: float32 = --precision fp32, bfloat16 = "
                             "--precision bf16")
    parser.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="the torch.compile contender (default: on accelerators only)")


def main(argv: Sequence[str] | None = None) -> None:
    from jaxformer.peaks import device_peak

    def run_with_peak(**kwargs: Any) -> list[dict[str, Any]]:
        return run(peak=device_peak().flops_per_s, **kwargs)

    bench_main("benchmarks.bench_model", doc=__doc__, run=run_with_peak, write=write,
               columns=COLUMNS, quick_help="the CPU shapes of `jaxformer bench`", argv=argv,
               add_arguments=add_precision_arguments)


if __name__ == "__main__":
    main()
