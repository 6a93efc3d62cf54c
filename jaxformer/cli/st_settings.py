"""The embedding settings a sentence-transformers model directory records.

sentence-transformers saves a model as a list of modules (``modules.json``): the Transformer
(its ``sentence_bert_config.json`` holds ``max_seq_length``), a Pooling module (``<path>/
config.json``: a ``pooling_mode`` name, or the older ``pooling_mode_*_token(s)`` booleans) and
optionally ``Normalize``. See https://sbert.net/docs/sentence_transformer/usage/custom_models.html.
`jaxformer embed` uses these as its defaults, so a directory gives the embeddings its authors
meant without flags.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

from jaxformer.cli.common import CLIError

# sentence-transformers' pooling modes -> our pooling names (None: not implemented here).
ST_POOLING_MODES: dict[str, str | None] = {
    "cls": "cls", "mean": "mean", "max": None, "mean_sqrt_len_tokens": None,
    "weightedmean": None, "lasttoken": None,
}
# The older config format: one boolean per mode.
ST_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken",
}
# Modules that change nothing we do not reproduce (the encoder itself, pooling, normalising).
_UNDERSTOOD = {"Transformer", "Pooling", "Normalize"}


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Defaults read from a model directory; None where it records nothing usable.

    Attributes:
      pooling, normalize, max_length: the settings (max_length as recorded, not yet capped).
      sources: setting name -> the file it came from, relative to the directory.
      pooling_problem: why the directory's pooling cannot be used (say, ``max``), else None.
      notes: modules listed in ``modules.json`` that `jaxformer embed` does not apply.
    """

    pooling: str | None = None
    normalize: bool | None = None
    max_length: int | None = None
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    pooling_problem: str | None = None
    notes: tuple[str, ...] = ()


def _join(module_path: str, name: str) -> str:
    """A file of a module, relative to the directory (path "" is the directory itself)."""
    return f"{module_path.strip('/')}/{name}" if module_path.strip("/") else name


def _read_json(directory: Path, relative: str) -> Any:
    try:
        return json.loads((directory / relative).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CLIError(f"--model {directory}: cannot read {relative} ({err})") from None


def _pooling_modes(config: Any) -> list[str]:
    if not isinstance(config, dict):
        return []
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        return [mode] if isinstance(mode, str) else [str(m) for m in mode or []]
    return [mode for key, mode in ST_LEGACY_KEYS.items() if config.get(key) is True]


def _pooling(directory: Path, relative: str) -> tuple[str | None, str | None]:
    """(our pooling name, None) or (None, why not)."""
    modes = _pooling_modes(_read_json(directory, relative))
    if len(modes) != 1:
        shown = " + ".join(modes) if modes else "no mode"
        return None, f"{relative} asks for {shown}; jaxformer embed computes exactly one pooling"
    ours = ST_POOLING_MODES.get(modes[0])
    if ours is None:
        return None, f"{relative} asks for '{modes[0]}' pooling, which jaxformer embed does not implement"
    return ours, None


def read_model_settings(directory: Path) -> ModelSettings:
    """The sentence-transformers settings of `directory` (all None for a plain HF directory)."""
    found: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problem = None
    notes = []
    transformer_path, pooling_config = "", "1_Pooling/config.json"
    if (directory / "modules.json").is_file():
        modules = _read_json(directory, "modules.json")
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise CLIError(f"--model {directory}: modules.json is not a list of modules")
        kinds: dict[str, str] = {}
        for module in modules:
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            kinds.setdefault(kind, str(module.get("path", "")))
            if kind not in _UNDERSTOOD:
                notes.append(f"modules.json lists {module.get('type')}, which jaxformer embed "
                             "does not apply: embeddings will differ from sentence-transformers'")
        transformer_path = kinds.get("Transformer", "")
        pooling_config = _join(kinds["Pooling"], "config.json") if "Pooling" in kinds else None
        found["normalize"], sources["normalize"] = "Normalize" in kinds, "modules.json"
    if pooling_config is not None and (directory / pooling_config).is_file():
        pooling, problem = _pooling(directory, pooling_config)
        if pooling is not None:
            found["pooling"], sources["pooling"] = pooling, pooling_config
    st_config = _join(transformer_path, "sentence_bert_config.json")
    if (directory / st_config).is_file():
        value = _read_json(directory, st_config)
        value = value.get("max_seq_length") if isinstance(value, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            found["max_length"], sources["max_length"] = value, st_config
    return ModelSettings(**found, sources=sources, pooling_problem=problem, notes=tuple(notes))
