"""The CLUE suite (post 8739): Chinese classification, reading comprehension, idiom cloze and NER.

- `config`: `ClueConfig` and the post's per-task settings (`CLUE_PRESETS`);
- `layouts`: the sentence-level input layouts (pairs, WSC marks, CSL keywords);
- `sentence`: the sentence-level tasks' adapter for `run_clue`;
- `metrics`: accuracy, CMRC2018's official EM/F1, entity-level F1, BIO to spans;
- `chid_decode`: CHID's Hungarian decoding over blanks x candidates;
- `runner`: `run_clue`, one task end to end (what `jaxformer clue` runs).
"""

from jaxformer.tasks.clue.config import CLUE_PRESETS, TASKS, ClueConfig
from jaxformer.tasks.clue.runner import run_clue

__all__ = ["CLUE_PRESETS", "TASKS", "ClueConfig", "run_clue"]
