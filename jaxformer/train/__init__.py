"""Training: optimisers, pure jitted steps, checkpoints, the task-agnostic loop and fine-tuning.

Imports flow one way: `train` may import `models`, the kernels and `io`; nothing below imports
`train` (and `train` never imports the `jaxformer.tasks` built on it).
"""

from jaxformer.train.checkpoint import Checkpointer, finalized_steps
from jaxformer.train.diagnostics import (CoordCheck, MomentReport, coord_check, moment_report,
                                         plot_coord_check, plot_moments)
from jaxformer.train.finetune import FinetuneConfig, FinetuneResult, classifier_loss, finetune
from jaxformer.train.linear_probe import accuracy, fit_gradient_descent, fit_lbfgs, log_loss
from jaxformer.train.loop import (LoopConfig, LoopResult, MetricsLog, evaluate_in_batches,
                                  shuffled_rows, take_rows, train_loop)
from jaxformer.train.optim import (adamw, decay_mask, mup_lr_multipliers, scale_updates,
                                   warmup_linear_schedule)
from jaxformer.train.sharding import (ShardingRules, activation_constraint, batch_sharding,
                                      create_train_state, make_mesh, shard_train_state)
from jaxformer.train.step import (
    TrainState,
    data_shardings,
    init_train_state,
    make_eval_step,
    make_train_step,
    merge_model,
)

__all__ = [
    "Checkpointer",
    "ShardingRules",
    "CoordCheck",
    "MomentReport",
    "FinetuneConfig",
    "FinetuneResult",
    "LoopConfig",
    "LoopResult",
    "MetricsLog",
    "TrainState",
    "accuracy",
    "activation_constraint",
    "adamw",
    "batch_sharding",
    "classifier_loss",
    "coord_check",
    "create_train_state",
    "data_shardings",
    "decay_mask",
    "evaluate_in_batches",
    "finalized_steps",
    "finetune",
    "fit_gradient_descent",
    "fit_lbfgs",
    "init_train_state",
    "log_loss",
    "make_eval_step",
    "make_mesh",
    "make_train_step",
    "merge_model",
    "moment_report",
    "mup_lr_multipliers",
    "plot_coord_check",
    "plot_moments",
    "scale_updates",
    "shard_train_state",
    "shuffled_rows",
    "take_rows",
    "train_loop",
    "warmup_linear_schedule",
]
