"""The layer map of the README's architecture section, enforced: imports flow downwards only.

    cli / benchmarks        -> anything below
    tasks                   -> train, models, kernels, io
    train                   -> models, kernels, io
    models                  -> kernels, io
    kernels                 -> kernels only
    io                      -> io only

and nothing under jaxformer/ imports torch, transformers or sentence_transformers.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "jaxformer"
FORBIDDEN = {"torch", "transformers", "sentence_transformers"}
KERNELS = {"functional", "attention", "pooling", "rope", "rope_layouts", "linear_attention", "initializers",
           "similarity", "whitening", "contrastive", "replacement",
           "logreg", "flops", "hlo_flops", "feature_maps", "peaks", "random_bits", "pytree", "residual",
           "flash_attention", "global_pointer", "unilm"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "jaxformer":
        return "external"
    if len(parts) == 1:
        return "package"
    head = parts[1]
    if head in KERNELS:
        return "kernels"
    return {"io": "io", "models": "models", "train": "train", "tasks": "tasks", "cli": "cli"}.get(head, head)


ALLOWED = {
    "kernels": {"kernels"},
    "io": {"io"},
    "models": {"kernels", "io", "models"},
    "train": {"kernels", "io", "models", "train"},
    "tasks": {"kernels", "io", "models", "train", "tasks"},
    "cli": {"kernels", "io", "models", "train", "tasks", "cli"},
    "package": {"kernels", "io", "models", "train", "package"},
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the file's package
                pkg = path.relative_to(ROOT.parent).with_suffix("").parts[: -node.level]
                base = ".".join(pkg)
                names.append(f"{base}.{node.module}" if node.module else base)
            else:
                base = node.module or ""
                names.append(base)
                if base == "jaxformer":  # `from jaxformer import functional`: a submodule
                    names.pop()
                    names += [f"jaxformer.{a.name}" if _is_module(a.name) else "jaxformer"
                              for a in node.names]
    return names


def _is_module(name: str) -> bool:
    return (ROOT / f"{name}.py").exists() or (ROOT / name / "__init__.py").exists()


FILES = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_imports_flow_downwards(path):
    module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
    mine = layer_of(module)
    for name in _imports(path):
        assert name.split(".")[0] not in FORBIDDEN, f"{module} imports {name}: references belong in tests"
        theirs = layer_of(name)
        if theirs == "external":
            continue
        assert theirs in ALLOWED[mine], f"{module} ({mine}) may not import {name} ({theirs})"


def test_files_stay_small():
    for path in FILES:
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= 500, f"{path.name} has {lines} lines; split it (one concept per file)"
