"""The README's tour runs as written: every ```python block alone, in a fresh namespace (as a
reader pasting one block into a new interpreter would), printing what the README says it prints.

One check per block, in README order; a block added to (or removed from) the README without its
check fails `test_every_block_has_a_check`.
"""

import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _floats(line: str) -> list[float]:
    return [float(word) for word in line.split()]


def check_embed(out: list[str]) -> None:
    shape, cosine = out[0].rsplit(" ", 1)
    assert shape == "(2, 384)" and 0.6 < float(cosine) < 0.95  # "a cosine near 0.8"


def check_stages(out: list[str]) -> None:
    assert out == ["0.0"]


def check_train_step(out: list[str]) -> None:
    (loss,) = _floats(out[0])
    assert abs(loss - math.log(2)) < 0.02  # "about ln 2, an untrained 2-class head"


def check_rope(out: list[str]) -> None:
    assert out == ["(2, 196, 12, 64)"]


def check_linear_attention(out: list[str]) -> None:
    modes, decode = _floats(out[0])
    assert 0 <= modes < 1e-5 and 0 <= decode < 1e-5


def check_logreg(out: list[str]) -> None:
    accuracy, gd_accuracy, relative = _floats(out[0])
    assert accuracy == 1.0
    assert 0.9 <= gd_accuracy < 1.0  # "gradient descent: 0.94"
    assert 0 <= relative < 1e-5  # streamed statistics: "the same model", within fp32 rounding


def check_moments(out: list[str]) -> None:
    forward, grad = _floats(out[0])
    assert abs(forward - 1.0) < 1e-5 and abs(grad - 0.9158) < 5e-4
    assert out[1].startswith("1.1368472")


def check_sharding(out: list[str]) -> None:
    assert out == ["P(None, 'model')"]  # "split by columns" over the model axis


CHECKS: list[Callable[[list[str]], None]] = [
    check_embed, check_stages, check_train_step, check_rope, check_linear_attention,
    check_logreg, check_moments, check_sharding,
]


def test_every_block_has_a_check():
    assert len(BLOCKS) == len(CHECKS), (
        f"README.md has {len(BLOCKS)} python blocks but tests/test_readme.py has {len(CHECKS)} "
        "checks; add or remove the check of the block that changed")


def _block_id(index: int) -> str:
    name = CHECKS[index].__name__.removeprefix("check_") if index < len(CHECKS) else "unchecked"
    return f"{index}-{name}"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=_block_id)
def test_block_runs_alone(index, capsys, require):
    if index >= len(CHECKS):
        pytest.fail(f"README.md python block {index} has no check in tests/test_readme.py")
    block = BLOCKS[index]
    # The block's own imports, through `require`: a missing dev dependency (the MiniLM weights,
    # scikit-learn) is an error here, and a skip with its name on the device-check pass.
    for module in sorted(set(re.findall(r"^(?:from|import) (\w+)", block, flags=re.M))):
        require(module)
    code = compile(block, f"README.md python block {index}", "exec")
    exec(code, {"__name__": "readme"})  # noqa: S102  (the README's own code, a fresh namespace)
    CHECKS[index](capsys.readouterr().out.splitlines())
