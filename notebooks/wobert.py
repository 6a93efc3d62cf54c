# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # WoBERT: a word-level Chinese BERT (Su Jianlin, kexue.fm post 7758, "提速不掉点")
#
# Run: `JAXFORMER_DATA=../shared/data .venv/bin/python notebooks/wobert.py` (about 20 s on 2 CPU
# cores), or open it in Jupyter via jupytext. The post's idea: a Chinese BERT reads characters,
# but a word-level vocabulary makes the same text a shorter sequence (faster), and with the
# right initialisation it loses no accuracy. This notebook walks through
#
# 1. the tokenizer on real sentences: jieba (HMM off) first, in-vocabulary words kept whole, the
#    rest re-tokenized by BERT's rules;
# 2. the vocabulary: bert-base-chinese's 21,128 tokens, minus the multi-char CJK/punctuation
#    tokens, plus jieba's 20,000 most frequent words;
# 3. the initialisation: each new word's embedding is the mean of its characters' embeddings;
# 4. goal P7 (throughput) and claim R6 (accuracy), read from the committed results of
#    `benchmarks/bench_wobert.py` and `benchmarks/exp_wobert_r6.py` (nothing is trained here).
#
# Sections 1–3 read the bert-base-chinese vocabulary from the data folder named by
# `JAXFORMER_DATA`; without it they say so and are skipped. Shape letters as in the README:
# V vocabulary, E width.

# %%
import json
import os
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

t_start = time.perf_counter()
ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
DATA = os.environ.get("JAXFORMER_DATA")
VOCAB = Path(DATA) / "vocab" / "bert-base-chinese-vocab.txt" if DATA else None
HAVE_DATA = VOCAB is not None and VOCAB.is_file()
print("data folder:", DATA if HAVE_DATA else "not set (sections 1-3 skipped)")

# %% [markdown]
# ## 1–2. The vocabulary and the tokenizer
#
# `build_wobert_vocab` applies WoBERT's rule (its `train.py`): drop every token longer than one
# character whose stem (`##` stripped) contains a CJK character or punctuation, keep
# `[PAD] [UNK] [CLS] [SEP] [MASK]` first, then add jieba's dictionary words by descending
# frequency. Su's final vocabulary has 33,586 tokens.

# %%
if HAVE_DATA:
    import tempfile

    from jaxformer.io import WordPieceTokenizer
    from jaxformer.io.wobert_vocab import build_wobert_vocab, save_wobert_vocab

    tokens, stats = build_wobert_vocab(VOCAB, num_words=20000)
    print("vocabulary:", stats, "(Su: 33,586)")
    work = Path(tempfile.mkdtemp())
    (work / "char").mkdir()
    (work / "char" / "vocab.txt").write_text(VOCAB.read_text("utf-8"), "utf-8")
    char_tok = WordPieceTokenizer.from_directory(work / "char")
    word_tok = save_wobert_vocab(tokens, work / "wobert")
    added = tokens[stats["kept"]:]
    lengths = np.bincount([len(w) for w in added])
    print("added words by length:", {n: int(c) for n, c in enumerate(lengths) if c})
    print("most frequent added words:", added[:20])

# %% [markdown]
# The same sentences through both tokenizers. Words jieba finds and the vocabulary has stay
# whole; a jieba word outside the 20k (e.g. 今天天气) falls back to characters, as in
# bert4keras. The offsets map every token back to its characters (the CLUE span tasks use them).

# %%
if HAVE_DATA:
    sentences = ["今天天气不错，我们去公园散步吧",
                 "自然语言处理是人工智能的一个重要方向",
                 "苹果公司发布了新款MacBook，搭载M3芯片，性能提升明显。",
                 "中国人民银行决定下调金融机构存款准备金率"]
    for s in sentences:
        c, w = char_tok.tokenize(s), word_tok.tokenize(s)
        print(f"{len(s):3d} chars | char BERT {len(c):3d} tokens | WoBERT {len(w):3d}: "
              + " ".join(w))
    enc = word_tok.encode_batch(sentences[:1], max_length=32, return_offsets=True)
    ids, offsets = enc["input_ids"][0], enc["offset_mapping"][0]
    print([(word_tok.decode([i]), sentences[0][a:b]) for i, (a, b) in zip(ids, offsets)
           if b > a])

# %% [markdown]
# ## 3. Mean-of-characters initialisation
#
# A char model moved to the WoBERT vocabulary keeps every weight; a token both vocabularies
# share keeps its row, and a new word's row (and its MLM output bias) starts as the mean of its
# characters' rows: $e_{w} = \frac1{|w|}\sum_{c\in w} e_c$. Below on a small random char model
# (a pretrained one works the same: `benchmarks/pretrain_zh.py` does exactly this), checked
# against the formula.

# %%
if HAVE_DATA:
    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Encoder
    from jaxformer.models.lm import MaskedLM
    from jaxformer.models.vocab_transfer import resize_vocabulary

    char_vocab = VOCAB.read_text("utf-8").split("\n")[:-1]
    cfg = EncoderConfig(vocab_size=len(char_vocab), hidden_size=64, num_layers=1, num_heads=2,
                        intermediate_size=128, use_pooler=False)
    char_lm = MaskedLM(Encoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    word_lm, transfer = resize_vocabulary(char_lm, char_vocab, tokens, split=char_tok.tokenize)
    print("rows:", transfer)
    emb = np.asarray(char_lm.encoder.embed.word.embedding[...], np.float64)
    new = np.asarray(word_lm.encoder.embed.word.embedding[...], np.float64)
    index = {t: i for i, t in enumerate(char_vocab)}
    for word in [w for w in ("公园", "中国人民银行", "散步", "发展") if w in tokens]:
        direct = emb[[index[c] for c in char_tok.tokenize(word)]].mean(axis=0)
        err = np.abs(new[tokens.index(word)] - direct).max()
        print(f"{word}: max |e_word - mean(e_chars)| = {err:.1e}")
    probe = jnp.asarray([[tokens.index(t) for t in ("[CLS]", "公园", "[SEP]")]], jnp.int32)
    print("logits of the word model:", word_lm(probe, deterministic=True).shape)

# %% [markdown]
# ## 4. Goal P7 and claim R6, from the committed results
#
# P7: characters per second of WoBERT over the char BERT, same model size, same texts (People's
# Daily cut to 128/256/512 characters). Su: 1.16x, 1.22x, 1.28x. R6: test accuracy after
# fine-tuning both (3 seeds). The tables are the benchmarks' own Markdown reports.

# %%
def latest(name: str) -> list[Path]:
    return sorted((ROOT / "results").glob(f"*/{name}.json"))


for name in ("wobert_speed", "wobert_speed_bf16", "pretrain_zh", "pretrain_zh_cpu-session",
             "pretrain_zh_sweep", "wobert_r6"):
    for path in latest(name):
        report = json.loads(path.read_text("utf-8"))
        print(f"--- {path.relative_to(ROOT)}: {report['title']}")
        print("reproduce:", report["command"])
        md = path.with_suffix(".md").read_text("utf-8")
        print(md[md.index("|"):md.index("\n\n", md.index("|"))] if "|" in md else md)
        if name.startswith("wobert_speed"):
            for row in report["rows"]:
                print(f"  {row['length']} chars, {row['workload']}: tokens/text char "
                      f"{row['char_tokens']:.0f} vs WoBERT {row['word_tokens']:.0f} "
                      f"(ratio {row['char_tokens'] / row['word_tokens']:.2f}); speedup "
                      f"{row['speedup']:.2f}x (Su {row['su']})")
if not latest("wobert_r6"):
    print("no R6 results committed yet: python -m benchmarks.exp_wobert_r6 --data-dir DIR")

# %%
print(f"notebook ran in {time.perf_counter() - t_start:.1f} s")
