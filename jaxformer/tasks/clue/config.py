"""One CLUE task's options: its layout, head and post 8739's training settings.

Su's CLUE baselines (kexue.fm/archives/8739, code github.com/bojone/CLUE-bert4keras) fix per
task the maximum length, the batch, the epochs and the gradient accumulation, and train every
task with AdaFactor at 5e-4 (`jaxformer.train.adafactor`). `CLUE_PRESETS` holds that table;
`ClueConfig.preset(task)` starts from it and ``dataclasses.replace`` changes any field.

| task | layout | head | metric |
|---|---|---|---|
| iflytek, tnews | ``[CLS] text [SEP]`` | Dense on [CLS] | accuracy |
| afqmc, cmnli, ocnli | ``[CLS] a [SEP] b [SEP]`` | Dense on [CLS] | accuracy |
| wsc | text with span 1 as ``_..._``, span 2 as ``[...]`` | Dense on [CLS] | accuracy |
| csl | keywords joined by "；", then the abstract | Dense on [CLS] | accuracy |
| c3 | passage + question + option, per option | Dense(1) per option, softmax | accuracy |
| chid | the blank as ``[unused1]`` (``blank_token``), per candidate | Dense(1) per candidate, softmax | accuracy |
| cmrc2018 | question + context window (stride 128) | GlobalPointer, 1 type | EM, F1 |
| cluener | text | GlobalPointer, one head per type | entity F1 |
"""

import dataclasses

from jaxformer.io.clue_tasks import CLUE_TASKS, FEWCLUE_ONLY, clue_task

# The eleven CLUE tasks, then FewCLUE's own three (sentence tasks, given the single-text
# defaults: the post does not cover them).
TASKS = CLUE_TASKS + FEWCLUE_ONLY

KINDS = {"iflytek": "single", "tnews": "single", "afqmc": "pair", "cmnli": "pair",
         "ocnli": "pair", "wsc": "wsc", "csl": "csl", "cmrc2018": "span", "c3": "choice",
         "chid": "choice", "cluener": "ner", "bustm": "pair", "eprstmt": "single",
         "csldcp": "single"}
SEGMENT_MODES = ("zero", "pair")

# (max_len, batch_size, epochs, accumulate) from the post's table. C3 and CHID batches count
# questions (each scores 4 or 10 options); CMRC2018's 512 is a window of stride 128.
CLUE_PRESETS = {
    "iflytek": (128, 32, 10, 1), "tnews": (128, 32, 10, 1), "afqmc": (128, 32, 10, 1),
    "cmnli": (128, 32, 10, 1), "ocnli": (128, 32, 10, 1), "csl": (128, 32, 10, 1),
    "wsc": (128, 32, 30, 1), "cmrc2018": (512, 16, 10, 2), "c3": (512, 4, 10, 4),
    "chid": (64, 12, 5, 2), "cluener": (256, 32, 10, 1),
    "bustm": (128, 32, 10, 1), "eprstmt": (128, 32, 10, 1), "csldcp": (128, 32, 10, 1),
}


@dataclasses.dataclass(frozen=True)
class ClueConfig:
    """A CLUE task's settings (post 8739 by default; see `CLUE_PRESETS`).

    Attributes:
      task: the lower-case CLUE name (aliases resolved by `preset`).
      max_len: tokens per input, [CLS] and [SEP] included (CMRC2018: per window).
      batch_size: examples per optimiser update (questions for C3 and CHID).
      epochs: passes over the training set.
      accumulate: gradient accumulation: each update runs `accumulate` micro-batches of
        ``batch_size / accumulate`` examples (bert4keras' ``grad_accum_steps``; the post's x2 for
        CHID and CMRC2018, x4 for C3, with the post's batch as the micro-batch).
      learning_rate: AdaFactor's rate (post: 5e-4).
      segment_ids: ``"zero"``: every segment id 0, as the post does (RoBERTa has no NSP, so
        segment 1 may be untrained); ``"pair"``: 0 for the first text, 1 for the second (BERT).
      doc_stride: CMRC2018's window stride in tokens (post: 128).
      head_size: GlobalPointer's head size (post: 64, an attention head's size).
      seed: drives data order, dropout and the heads' initial weights.
      blank_token: CHID's mark for the blank being filled (post: ``[unused1]``). A vocabulary
        without it (WoBERT's drops every ``[unusedN]``, kexue.fm/archives/7758) needs another
        token it has, one the passages never contain (e.g. ``§``).
    """

    task: str
    max_len: int
    batch_size: int
    epochs: int
    accumulate: int = 1
    learning_rate: float = 5e-4
    segment_ids: str = "zero"
    doc_stride: int = 128
    head_size: int = 64
    seed: int = 0
    blank_token: str = "[unused1]"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"ClueConfig.task must be one of {list(TASKS)}, got {self.task!r}")
        for name, low in (("max_len", 8), ("batch_size", 1), ("epochs", 1), ("accumulate", 1),
                          ("doc_stride", 1), ("head_size", 2), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ClueConfig.{name} must be an int >= {low}, got {value!r}")
        if self.head_size % 2:
            raise ValueError(f"ClueConfig.head_size must be even (RoPE rotates pairs), "
                             f"got {self.head_size}")
        if self.batch_size % self.accumulate:
            raise ValueError(f"ClueConfig.batch_size must be a multiple of accumulate="
                             f"{self.accumulate}, got {self.batch_size}")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"ClueConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.segment_ids not in SEGMENT_MODES:
            raise ValueError(f"ClueConfig.segment_ids must be one of {SEGMENT_MODES}, "
                             f"got {self.segment_ids!r}")
        if not isinstance(self.blank_token, str) or not self.blank_token.strip():
            raise ValueError(f"ClueConfig.blank_token must be a non-empty token string, "
                             f"got {self.blank_token!r}")
        if self.task == "cmrc2018" and self.doc_stride >= self.max_len:
            raise ValueError(f"ClueConfig.doc_stride must be < max_len={self.max_len}, "
                             f"got {self.doc_stride}")

    @property
    def kind(self) -> str:
        """The layout family: single, pair, wsc, csl, choice, span or ner."""
        return KINDS[self.task]

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.accumulate

    @classmethod
    def preset(cls, task: str, **changes: object) -> "ClueConfig":
        """Post 8739's settings for `task`, with `changes` applied.

        The post's batch is what one forward pass holds; with accumulation the update sees
        ``batch x accumulate`` examples, so the preset's `batch_size` is that product.
        """
        name = clue_task(task)
        max_len, batch, epochs, accumulate = CLUE_PRESETS[name]
        base = cls(task=name, max_len=max_len, batch_size=batch * accumulate, epochs=epochs,
                   accumulate=accumulate)
        return dataclasses.replace(base, **changes)
