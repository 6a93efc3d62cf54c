"""Tasks: training objectives as small config objects that the task-agnostic loop trains.

A `Task` builds its model, scores a batch, collates its data and evaluates it exactly; `fit`
runs one through `jaxformer.train.loop.train_loop`. Layering: tasks import `train`, `models`,
the kernels and `io`; only the CLI and benchmarks import tasks.
"""

from jaxformer.tasks.base import Task, TaskBase, fit
from jaxformer.tasks.classification import ClassificationTask
from jaxformer.tasks.mlm import MaskedLMTask
from jaxformer.tasks.seq2seq import Seq2SeqLMTask, encode_pairs
from jaxformer.tasks.simcse import SimCSETask, simcse_data
from jaxformer.tasks.theseus import THESEUS_PRESETS, TheseusConfig, TheseusTask
from jaxformer.tasks.theseus_recipe import TheseusRecipe, compress, truncation_baseline

__all__ = ["THESEUS_PRESETS", "ClassificationTask", "MaskedLMTask", "Seq2SeqLMTask", "SimCSETask",
           "Task", "TaskBase", "TheseusConfig", "TheseusRecipe", "TheseusTask", "compress",
           "encode_pairs", "fit", "simcse_data", "truncation_baseline"]
