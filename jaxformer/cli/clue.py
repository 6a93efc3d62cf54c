"""`jaxformer clue`: fine-tune one CLUE task end to end (`jaxformer.tasks.clue.run_clue`).

    jaxformer clue TASK --model DIR --data-dir DIR --out DIR [--epochs N] [--max-steps N]

TASK is the lower-case CLUE name (iflytek, tnews, afqmc, cmnli, ocnli, wsc/cluewsc, csl,
cmrc2018, c3, chid, cluener; FewCLUE's bustm, eprstmt, csldcp). Post 8739's settings per task;
the best dev checkpoint is kept, dev (and labelled test) metrics go to ``OUT/metrics.json`` and
the CLUE submission file to ``OUT/``. Rerunning the command resumes a killed run.
"""

import argparse
import json
from typing import Any

from jaxformer.cli.common import CLIError

NAME = "clue"


def register(sub: Any) -> None:
    p = sub.add_parser(NAME, help="fine-tune one CLUE task (post 8739's baselines)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", help="the lower-case CLUE task name, e.g. tnews or cluewsc")
    p.add_argument("--model", required=True, help="pretrained encoder folder (HF layout)")
    p.add_argument("--data-dir", required=True, help="the task's folder (CLUE or FewCLUE files)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, metrics, submission)")
    p.add_argument("--epochs", type=int, help="override the post's epochs")
    p.add_argument("--max-steps", type=int, help="stop after this many updates (smoke runs)")
    p.add_argument("--batch-size", type=int, help="override the post's batch (per update)")
    p.add_argument("--max-len", type=int, help="override the post's maximum length")
    p.add_argument("--learning-rate", type=float, help="override AdaFactor's rate (post: 5e-4)")
    p.add_argument("--doc-stride", type=int, help="override CMRC2018's window stride (128)")
    p.add_argument("--limit", type=int, help="read only the first N records of every split "
                   "(smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--segment-ids", choices=("zero", "pair"), default="zero",
                   help="pairs: all segment ids 0 (the post) or BERT's 0/1")
    p.add_argument("--blank-token", help="CHID's blank mark (default [unused1]; WoBERT's "
                   "vocabulary has none: e.g. §)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxformer.io.zh_tasks import MissingDataError
    from jaxformer.tasks.clue.config import ClueConfig
    from jaxformer.tasks.clue.runner import run_clue

    changes = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                 ("max_len", args.max_len), ("doc_stride", args.doc_stride),
                                 ("learning_rate", args.learning_rate),
                                 ("blank_token", args.blank_token))
               if v is not None}
    try:
        config = ClueConfig.preset(args.task, seed=args.seed, segment_ids=args.segment_ids,
                                   **changes)
        report = run_clue(config, model_dir=args.model, data_dir=args.data_dir, out_dir=args.out,
                          max_steps=args.max_steps, limit=args.limit,
                          progress=not args.no_progress)
    except (MissingDataError, FileNotFoundError, NotImplementedError, ValueError) as err:
        raise CLIError(str(err)) from None
    print(json.dumps({k: report[k] for k in ("task", "dev", "test", "submission", "steps")
                      if k in report}, ensure_ascii=False))
    return 0
