"""AdaFactor as bert4keras runs it: the optimiser of Su's CLUE baselines (kexue.fm/archives/8739).

Su's scripts call ``AdaFactor(learning_rate=5e-4, beta1=0.9, min_dim_size_to_factor=10**6)``
on top of bert4keras' defaults (github.com/bojone/bert4keras, ``optimizers.py``):

=========================  =====================================  ===============================
setting                    bert4keras (Su's CLUE scripts)         ``optax.adafactor`` default
=========================  =====================================  ===============================
second moment decay        beta2_t = 1 - t^-0.8, t from 1         the same (``decay_rate=0.8``)
epsilon1 (inside v)        1e-30, added to g^2                    the same (``eps=1e-30``)
factoring                  off here: no dim reaches 10^6          on for dims >= 128
update clipping            u / max(1, RMS(u) / 1.0)               the same (``clipping_threshold``)
parameter scale            u * max(RMS(p), epsilon2 = 1e-3)       the same (``min_scale=1e-3``)
momentum beta1 = 0.9       EMA of the clipped u, BEFORE lr and    EMA AFTER lr and parameter
                           parameter scale                        scale (``momentum=``)
weight decay               none                                   none unless asked
=========================  =====================================  ===============================

The one real difference is where the momentum sits: bert4keras averages the clipped direction
and then multiplies by ``lr_t * max(RMS(p_t), 1e-3)`` of the current step; optax averages the
already-scaled updates, so past steps keep their own learning rate and parameter scale. The two
agree exactly without momentum and differ slightly (the parameter scale drifts slowly) with it.
`bert4keras_adafactor` chains optax's own building blocks in bert4keras' order, so Su's
optimiser is reproduced rather than approximated; ``order="optax"`` gives ``optax.adafactor``.
"""

from collections.abc import Callable
from typing import Any

import optax

from jaxformer.train.optim import _check_number, standard_promotion

Schedule = Callable[[Any], Any]


def bert4keras_adafactor(
    learning_rate: float | Schedule = 5e-4,
    *,
    beta1: float | None = 0.9,
    decay_rate: float = 0.8,
    min_dim_size_to_factor: int = 10**6,
    clipping_threshold: float | None = 1.0,
    multiply_by_parameter_scale: bool = True,
    epsilon1: float = 1e-30,
    epsilon2: float = 1e-3,
    order: str = "bert4keras",
) -> optax.GradientTransformation:
    """AdaFactor with Su's CLUE settings (the defaults); see the module doc for each option.

    Args:
      learning_rate: a constant or an optax schedule (injected, so the loop logs it).
      beta1: momentum; None or 0 for none (bert4keras' own default is 0).
      order: ``"bert4keras"`` (momentum before the learning rate and parameter scale) or
        ``"optax"`` (``optax.adafactor``'s chain: momentum after them).
    """
    if order not in ("bert4keras", "optax"):
        raise ValueError(f"order must be 'bert4keras' or 'optax', got {order!r}")
    if not callable(learning_rate):
        _check_number("learning_rate", learning_rate, low=0.0)
    if beta1 is not None:
        _check_number("beta1", beta1, low=0.0, high=1.0)
    _check_number("decay_rate", decay_rate, low=0.0, low_open=True)
    _check_number("epsilon1", epsilon1, low=0.0, low_open=True)
    _check_number("epsilon2", epsilon2, low=0.0)
    if clipping_threshold is not None:
        _check_number("clipping_threshold", clipping_threshold, low=0.0, low_open=True)
    if isinstance(min_dim_size_to_factor, bool) or not isinstance(min_dim_size_to_factor, int) \
            or min_dim_size_to_factor < 1:
        raise ValueError(f"min_dim_size_to_factor must be an int >= 1, "
                         f"got {min_dim_size_to_factor!r}")
    momentum = beta1 if beta1 else None

    def build(learning_rate):  # noqa: ANN001, ANN202 (called by inject_hyperparams)
        rms = [optax.scale_by_factored_rms(True, decay_rate, 0, min_dim_size_to_factor,
                                           epsilon1)]
        if clipping_threshold is not None:
            rms.append(optax.clip_by_block_rms(clipping_threshold))
        ema = [] if momentum is None else [optax.ema(momentum, debias=False)]
        scale = [optax.scale_by_learning_rate(learning_rate)]  # includes the sign flip
        if multiply_by_parameter_scale:
            scale.insert(0, optax.scale_by_param_block_rms(epsilon2))
        chain = rms + ema + scale if order == "bert4keras" else rms + scale + ema
        return optax.chain(*chain)

    return standard_promotion(optax.inject_hyperparams(build)(learning_rate=learning_rate))
