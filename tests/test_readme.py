"""The README's tour runs as written (its code blocks are executed in order, in one namespace)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_code_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md block {i}", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out.splitlines()
    shape, cosine = out[0].rsplit(" ", 1)
    assert shape == "(2, 384)" and 0.6 < float(cosine) < 0.95
    assert out[1] == "0.0"
    assert float(out[2]) > 0
