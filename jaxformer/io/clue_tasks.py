"""The CLUE 1.1 and FewCLUE tasks: their names, label lists and where their files sit.

:func:`clue_task` canonicalises a task name; :data:`CLUE_LABELS` holds each classification task's
labels (a label's int is its index there); :func:`clue_splits` finds a task's train/dev/test
files in the CLUE layout, FewCLUE's, or the layouts of the project's data folder. The readers
are in ``clue``, the submission files in ``clue_submit``.
"""

from pathlib import Path

from .zh_tasks import MissingDataError

# Label lists, in the order of the CLUE baselines' processors
# (https://github.com/CLUEbenchmark/CLUE/blob/master/baselines/models/classifier_utils.py):
# tnews has 15 codes 100..116 without 105 and 111; iflytek's 119 classes are "0".."118".
_NLI = ("contradiction", "entailment", "neutral")
CLUE_LABELS: dict[str, tuple[str, ...]] = {
    "iflytek": tuple(str(i) for i in range(119)),
    "tnews": tuple(str(100 + i) for i in range(17) if i not in (5, 11)),
    "afqmc": ("0", "1"),
    "cmnli": _NLI,
    "ocnli": _NLI,
    "wsc": ("true", "false"),
    "csl": ("0", "1"),
    # FewCLUE only (https://github.com/CLUEbenchmark/FewCLUE#分类任务-single-sentence-tasks).
    "bustm": ("0", "1"),
    "eprstmt": ("Negative", "Positive"),
    # https://github.com/CLUEbenchmark/FewCLUE/blob/main/datasets/csldcp/labels_all.txt
    "csldcp": (
        "材料科学与工程", "作物学", "口腔医学", "药学", "教育学", "水利工程", "理论经济学",
        "食品科学与工程", "畜牧学/兽医学", "体育学", "核科学与技术", "力学", "园艺学", "水产",
        "法学", "地质学/地质资源与地质工程", "石油与天然气工程", "农林经济管理", "信息与通信工程",
        "图书馆、情报与档案管理", "政治学", "电气工程", "海洋科学", "民族学", "航空宇航科学与技术",
        "化学/化学工程与技术", "哲学", "公共卫生与预防医学", "艺术学", "农业工程",
        "船舶与海洋工程", "计算机科学与技术", "冶金工程", "交通运输工程", "动力工程及工程热物理",
        "纺织科学与工程", "建筑学", "环境科学与工程", "公共管理", "数学", "物理学",
        "林学/林业工程", "心理学", "历史学", "工商管理", "应用经济学", "中医学/中药学", "天文学",
        "机械工程", "土木工程", "光学工程", "地理学", "农业资源利用", "生物学/生物科学与工程",
        "兵器科学与技术", "矿业工程", "大气科学", "基础医学/临床医学", "电子科学与技术",
        "测绘科学与技术", "控制科学与工程", "军事学", "中国语言文学", "新闻传播学", "社会学",
        "地球物理学", "植物保护",
    ),
}
_LABEL_INDEX = {task: {name: i for i, name in enumerate(names)}
                for task, names in CLUE_LABELS.items()}
# CLUENER2020's 10 entity types (https://github.com/CLUEbenchmark/CLUENER2020#数据类别).
CLUENER_TYPES = ("address", "book", "company", "game", "government", "movie", "name",
                 "organization", "position", "scene")

CLUE_TASKS = ("iflytek", "tnews", "afqmc", "cmnli", "ocnli", "wsc", "csl", "cmrc2018", "c3",
              "chid", "cluener")
FEWCLUE_ONLY = ("bustm", "eprstmt", "csldcp")
# FewCLUE's folder name of each task it shares with CLUE, and its own three.
FEWCLUE_NAMES = {"iflytek": "iflytek", "tnews": "tnews", "ocnli": "ocnli", "wsc": "cluewsc",
                 "csl": "csl", "chid": "chid", "bustm": "bustm", "eprstmt": "eprstmt",
                 "csldcp": "csldcp"}
_ALIASES = {"cluewsc": "wsc", "cluewsc2020": "wsc", "cluener2020": "cluener"}


def clue_task(name: str) -> str:
    """The canonical lower-case name of a CLUE or FewCLUE task (``cluewsc`` -> ``wsc``)."""
    task = _ALIASES.get(name.lower(), name.lower())
    if task not in CLUE_TASKS + FEWCLUE_ONLY:
        raise ValueError(f"task must be one of {list(CLUE_TASKS + FEWCLUE_ONLY)} (or an alias "
                         f"{sorted(_ALIASES)}), got {name!r}")
    return task


def _show(names):
    shown = names if len(names) <= 16 else [*names[:5], "...", *names[-2:]]
    return "[" + ", ".join(n if n == "..." else repr(n) for n in shown) + "]"


# --------------------------------------------------------------------------- split discovery

# Each split: alternatives, the first with a file present wins; an alternative may name several
# files read together (C3's d and m halves). CLUE layout: ``<task>_public.zip`` contents
# (https://github.com/CLUEbenchmark/CLUE/tree/master/baselines/models_pytorch/mrc_pytorch,
# run_mrc_{c3,chid,cmrc2018}.sh); 1.1 test files are ``test.json`` or ``test1.1.json``.
_CLUE_FILES = {"train": (("train.json",),), "dev": (("dev.json",),),
               "test": (("test1.1.json",), ("test.json",))}
_TASK_FILES = {
    # OCNLI's own splits (https://github.com/CLUEbenchmark/OCNLI#data-split); the data folder
    # has train.3k.
    "ocnli": {"train": (("train.50k.json",), ("train.json",), ("train.10k.json",),
                        ("train.3k.json",))},
    # The data folder's csts/ copies: headerless TSV train.txt, dev.txt.
    "afqmc": {"train": (("train.json",), ("train.txt",)), "dev": (("dev.json",), ("dev.txt",))},
    "cmnli": {"train": (("train.json",), ("train.txt",)), "dev": (("dev.json",), ("dev.txt",))},
    # ymcui/cmrc2018 names its files cmrc2018_*.json; without a train file the trial set trains.
    "cmrc2018": {"train": (("train.json",), ("cmrc2018_train.json",), ("trial.json",),
                           ("cmrc2018_trial.json",)),
                 "dev": (("dev.json",), ("cmrc2018_dev.json",)),
                 "test": (("test.json",), ("cmrc2018_test_2k.json",))},
    # CLUE: d-train.json + m-train.json; nlpdata/c3: c3-d-train.json + c3-m-train.json.
    "c3": {split: ((f"d-{split}.json", f"m-{split}.json"),
                   (f"c3-d-{split}.json", f"c3-m-{split}.json")) for split in ("train", "dev")}
    | {"test": (("test1.1.json",), ("test.json",), ("c3-d-test.json", "c3-m-test.json"))},
}
# Where a task's CLUE-layout folder may sit under a data root (the data folder's own names too).
_CLUE_FOLDERS = {
    "iflytek": ("iflytek", "iflytek_public"), "tnews": ("tnews", "tnews_public"),
    "afqmc": ("afqmc", "afqmc_public", "csts/AFQMC"),
    "cmnli": ("cmnli", "cmnli_public", "csts/Chinese-MNLI"),
    "ocnli": ("ocnli", "ocnli_public"), "wsc": ("cluewsc2020", "cluewsc2020_public", "wsc"),
    "csl": ("csl", "csl_public"), "cmrc2018": ("cmrc2018", "cmrc2018_public"),
    "c3": ("c3", "c3_public"), "chid": ("chid", "chid_public"),
    "cluener": ("cluener2020", "cluener", "cluener_public"),
}
# FewCLUE (https://github.com/CLUEbenchmark/FewCLUE#数据集文件结构-data-set-structure): the merged
# few-shot train/dev, the labelled public test as "test", the unlabelled test.json the site scores
# as "submit", and the five train_k/dev_k samples.
_FEWCLUE_FILES = {"train": (("train_few_all.json",),), "dev": (("dev_few_all.json",),),
                  "test": (("test_public.json",),), "submit": (("test.json",),)} | {
    f"{split}_{k}": ((f"{split}_{k}.json",),) for k in range(5) for split in ("train", "dev")}


def _find(folder, files, anchors):
    found = {}
    for split, alternatives in files.items():
        for names in alternatives:
            present = tuple(folder / n for n in names if (folder / n).is_file())
            if present:
                found[split] = present
                break
    return found if any(split in found for split in anchors) else {}


def clue_splits(task: str, data_dir: str | Path, *, fewclue: bool | None = None
                ) -> dict[str, tuple[Path, ...]]:
    """The files of each split of `task` found in `data_dir` (the task's folder, or a data root
    holding it under a known name such as ``ocnli/``, ``csts/AFQMC/`` or ``fewclue/tnews/``),
    each split a tuple of files (two for C3: dialogue and mixed) for :func:`read_clue`.

    CLUE layout: ``train``, ``dev``, ``test``; FewCLUE layout: ``train`` (train_few_all),
    ``dev`` (dev_few_all), ``test`` (the labelled test_public), ``submit`` (the unlabelled
    test.json), ``train_0``.. ``dev_4``. `fewclue`: None tries the CLUE layout, then FewCLUE's;
    True or False only one. Raises :class:`MissingDataError` naming every place looked at.
    """
    task = clue_task(task)
    root = Path(data_dir)
    if fewclue and task not in FEWCLUE_NAMES:
        raise ValueError(f"{task!r} is not a FewCLUE task (those are {sorted(FEWCLUE_NAMES)})")
    if fewclue is False and task in FEWCLUE_ONLY:
        raise ValueError(f"{task!r} is a FewCLUE task only; pass fewclue=True or None")
    layouts = []
    if not fewclue and task not in FEWCLUE_ONLY:
        files = _CLUE_FILES | _TASK_FILES.get(task, {})
        layouts += [(sub, files, ("train", "dev")) for sub in (".", *_CLUE_FOLDERS[task])]
    if fewclue is not False and task in FEWCLUE_NAMES:
        name = FEWCLUE_NAMES[task]
        layouts += [(sub, _FEWCLUE_FILES, ("train", "dev", "test", "train_0"))
                    for sub in (".", name, f"fewclue/{name}")]
    looked = []
    for sub, files, anchors in layouts:
        found = _find(root / sub, files, anchors)
        if found:
            return found
        names = sorted({n for split in anchors for alt in files[split] for n in alt})
        looked.append(f"{'' if sub == '.' else sub + '/'}{{{','.join(names)}}}")
    raise MissingDataError(root, looked)
