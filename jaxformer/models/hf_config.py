"""HF ``config.json`` <-> `EncoderConfig`: the rename table and its checks.

`EncoderConfig.from_hf` and `EncoderConfig.to_hf_dict` call these. Field names follow HF
`BertConfig` / `RoFormerConfig` where one exists, so the mapping is a table rather than logic;
compute options (``dtype``, ``matmul_precision``, ``attention_impl``, ``remat``,
``scan_layers``) are not architecture and are neither read nor written.
"""

import json
from pathlib import Path
from typing import Any

# HF RoFormer hard-codes the rotary base (`RoFormerSinusoidalPositionalEmbedding`).
HF_ROFORMER_ROPE_BASE = 10000.0

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
# Extra config.json keys of HF `RoFormerConfig`.
_HF_ROFORMER_KEYS = {"embedding_size": "embedding_size", "rotary_value": "rotary_value"}
# HF model_type -> the position scheme it implies.
MODEL_TYPE_POSITIONS = {"bert": "absolute", "roformer": "rope"}
SUPPORTED_MODEL_TYPES = tuple(MODEL_TYPE_POSITIONS)


def config_from_hf(cls: type, source: str | Path | dict[str, Any], **overrides: Any) -> Any:
    """``cls(**fields)`` from an HF ``config.json`` (a path to the file or its directory, or a
    dict), with `overrides` applied last."""
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
    if model_type not in MODEL_TYPE_POSITIONS:
        by_position = " or ".join(
            f"{[t for t, p in MODEL_TYPE_POSITIONS.items() if p == pos]} (position={pos!r})"
            for pos in dict.fromkeys(MODEL_TYPE_POSITIONS.values())
        )
        raise ValueError(
            f"{where}: model_type={model_type!r} is not supported; expected one of {by_position}"
        )
    fields = {ours: raw[theirs] for theirs, ours in _HF_KEYS.items() if theirs in raw}
    if model_type == "roformer":
        # Where RoFormerConfig's defaults differ from BertConfig's (= ours).
        fields = {"vocab_size": 50000, "max_position_embeddings": 1536, **fields}
        for flag in ("is_decoder", "add_cross_attention"):
            if raw.get(flag):
                raise ValueError(
                    f"{where}: {flag}=true is not supported; jaxformer's RoFormer is an encoder"
                )
        fields.update({ours: raw[theirs] for theirs, ours in _HF_ROFORMER_KEYS.items()
                       if raw.get(theirs) is not None})
        if fields.get("embedding_size") == fields.get("hidden_size", cls.__dataclass_fields__["hidden_size"].default):
            fields.pop("embedding_size")  # HF writes E_emb = E explicitly; ours says None
        # RoFormerModel has no pooler; HF's rotary base and pair layout are fixed.
        fields.update(position="rope", use_pooler=False, rope_base=HF_ROFORMER_ROPE_BASE,
                      rope_layout="interleaved")
    else:
        pos_type = raw.get("position_embedding_type", "absolute")
        if pos_type != "absolute":
            raise ValueError(
                f"{where}: position_embedding_type={pos_type!r} is not supported; expected 'absolute'"
            )
    if fields.get("pad_token_id") is None:
        fields.pop("pad_token_id", None)
    try:
        return cls(**{**fields, **overrides})
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None



def config_to_hf(cfg: Any) -> dict[str, Any]:
    """The ``config.json`` dict of `cfg` for transformers' `BertModel` or `RoFormerModel`;
    a ValueError names the field when the config has no HF equivalent."""
    hf_class = "RoFormerModel" if cfg.position == "rope" else "BertModel"
    if cfg.position == "rope_mixed" or cfg.rope_axes != 1:
        raise ValueError(
            f"EncoderConfig.position={cfg.position!r} with rope_axes={cfg.rope_axes} has no "
            "HF equivalent; only position='absolute' or 'rope' with rope_axes=1 exports"
        )
    unsupported = {"norm": (cfg.norm, "post"), "attention": (cfg.attention, "softmax"),
                   "causal": (cfg.causal, False), "norm_type": (cfg.norm_type, "layernorm"),
                   "residual": (cfg.residual, "standard"),
                   "parametrization": (cfg.parametrization, "standard"),
                   "attention_scale": (cfg.resolved_attention_scale, "sqrt")}
    if cfg.position == "rope":
        unsupported.update(use_pooler=(cfg.use_pooler, False),
                           rope_layout=(cfg.rope_layout, "interleaved"),
                           rope_base=(cfg.rope_base, HF_ROFORMER_ROPE_BASE))
    else:
        unsupported["embedding_size"] = (cfg.embedding_width, cfg.hidden_size)
    for name, (value, only) in unsupported.items():
        if value != only:
            raise ValueError(
                f"EncoderConfig.{name}={getattr(cfg, name)!r} has no HF {hf_class} "
                f"equivalent; only {name}={only!r} exports"
            )
    out: dict[str, Any] = {"model_type": cfg.hf_model_type, "architectures": [hf_class]}
    out.update({theirs: getattr(cfg, ours) for theirs, ours in _HF_KEYS.items()})
    if cfg.position == "rope":
        out.update(embedding_size=cfg.embedding_width, rotary_value=cfg.rotary_value,
                   is_decoder=False)
    else:
        out["position_embedding_type"] = "absolute"
    return out
