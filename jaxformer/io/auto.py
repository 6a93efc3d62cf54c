"""Pick the tokenizer a checkpoint directory asks for."""

import os
from pathlib import Path

from .jieba_tokenizer import JIEBA_TOKENIZER_CLASSES, JiebaWordPieceTokenizer
from .tensors import read_json
from .tokenizer import WordPieceTokenizer

__all__ = ["load_tokenizer"]


def load_tokenizer(directory: str | os.PathLike[str]) -> WordPieceTokenizer:
    """``JiebaWordPieceTokenizer`` (jieba + WordPiece; alias ``RoFormerTokenizer``) when
    ``tokenizer_config.json`` names ``RoFormerTokenizer``/``RoFormerTokenizerFast``, with the
    segmenter its ``jaxformer_segmenter`` key names (default ``"rjieba"``), else
    ``WordPieceTokenizer``; both loaded with ``from_directory``."""
    config_path = Path(directory) / "tokenizer_config.json"
    if config_path.is_file():
        config = read_json(config_path, what="tokenizer config")
        if isinstance(config, dict) and config.get("tokenizer_class") in JIEBA_TOKENIZER_CLASSES:
            return JiebaWordPieceTokenizer.from_directory(directory)
    return WordPieceTokenizer.from_directory(directory)
