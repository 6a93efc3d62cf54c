"""Pick the tokenizer a checkpoint directory asks for."""

import os
from pathlib import Path

from .roformer_tokenizer import ROFORMER_TOKENIZER_CLASSES, RoFormerTokenizer
from .tensors import read_json
from .tokenizer import WordPieceTokenizer

__all__ = ["load_tokenizer"]


def load_tokenizer(directory: str | os.PathLike[str]) -> WordPieceTokenizer:
    """``RoFormerTokenizer`` (jieba + WordPiece) when ``tokenizer_config.json``
    names ``RoFormerTokenizer``/``RoFormerTokenizerFast``, else
    ``WordPieceTokenizer``; both loaded with ``from_directory``."""
    config_path = Path(directory) / "tokenizer_config.json"
    if config_path.is_file():
        config = read_json(config_path, what="tokenizer config")
        if isinstance(config, dict) and config.get("tokenizer_class") in ROFORMER_TOKENIZER_CLASSES:
            return RoFormerTokenizer.from_directory(directory)
    return WordPieceTokenizer.from_directory(directory)
