"""Counter-based random bits for dropout masks: a hash of (key, element index).

``hash_bits(key, shape)`` returns uint32 bits ``h(i)`` for every flat element index ``i``:
the index is XOR-ed with the first word of the key's data and pushed through MurmurHash3's
32-bit finaliser ("fmix32", Appleby 2011), and each further key word is added and finalised
again. fmix32 is a bijection on 32-bit words, so for one key the ``2^32`` indices map to
``2^32`` distinct words, and its avalanche (each input bit flips each output bit with
probability ~1/2) makes neighbouring indices look independent.

Why not `jax.random.bernoulli`: threefry-2x32 runs 20 rounds per pair of words and the
bernoulli path also converts to floats. On 2 CPU cores the mask of one BERT-base attention
dropout (``[1, 12, 512, 512]``) took 42 ms with `bernoulli` and 26 ms with `jax.random.bits`,
against 0.54 ms here and 1.3 ms for the softmax it follows; across 12 layers the masks were
about a fifth of a train step (benchmarks/bench_main.py). The hash is not a cryptographic or
splittable generator: it is for masks. Keys still come from `jax.random` (``fold_in`` per step
and layer), so the same key gives the same mask on every backend and in every process, and
``rng="threefry"`` in `jaxformer.functional.dropout` keeps jax's own generator.
"""

import math

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, UInt32

MAX_ELEMENTS = 1 << 32  # the counter is one uint32 word


def fmix32(h: UInt32[Array, "*shape"]) -> UInt32[Array, "*shape"]:
    """MurmurHash3's finaliser: xor-shift 16, multiply, xor-shift 13, multiply, xor-shift 16."""
    h = h ^ (h >> jnp.uint32(16))
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> jnp.uint32(13))
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> jnp.uint32(16))


def key_words(key: Array) -> list[Array]:
    """The uint32 words of a PRNG key's data (typed or raw uint32 key), which the hash mixes in
    (kernels that draw masks themselves, like the flash-attention kernel, take these)."""
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        # Raw uint32 keys (jax.random.PRNGKey) are still accepted by jax.random; follow it.
        if key.dtype != jnp.uint32:
            raise TypeError(f"key must be a PRNG key (jax.random.key) or raw uint32 key data, "
                            f"got dtype {key.dtype}")
        data = key
    else:
        data = jax.random.key_data(key)
    if data.ndim != 1:
        raise ValueError(f"key must be a single key (key_data of rank 1), got key_data shape "
                         f"{tuple(data.shape)}")
    data = data.astype(jnp.uint32)
    return [data[i] for i in range(data.shape[0])]


def hash_bits(key: Array, shape: tuple[int, ...]) -> UInt32[Array, "*shape"]:
    """uint32 bits of `shape`, a hash of `key` (a PRNG key, typed or raw uint32) and each
    element's flat index. `key` is a plain `Array` here so that its own check names it."""
    shape = tuple(int(s) for s in shape)
    check_size(shape)
    index = lax.iota(jnp.uint32, math.prod(shape)).reshape(shape) if shape else jnp.zeros(
        (), jnp.uint32)
    return hash_index(key, index)


def hash_index(key: Array, index: UInt32[Array, "*shape"]) -> UInt32[Array, "*shape"]:
    """The bits `hash_bits` gives the elements whose flat indices are `index`: a block of a
    larger tensor (a tile of queries, say) gets exactly the bits it has in the whole."""
    if index.dtype != jnp.uint32:
        raise TypeError(f"index must be uint32 flat element indices, got dtype {index.dtype}")
    words = key_words(key)
    h = fmix32(index ^ words[0])
    for w in words[1:]:
        h = fmix32(h + w)
    return h


def check_size(shape: tuple[int, ...]) -> None:
    """Refuse tensors whose flat index does not fit the uint32 counter."""
    size = math.prod(int(s) for s in shape)
    if size > MAX_ELEMENTS:
        raise ValueError(f"hash_bits draws at most 2^32 = {MAX_ELEMENTS} elements (one uint32 "
                         f"counter), got shape {tuple(shape)} with {size}; split the tensor")


def keep_threshold(rate: float) -> np.uint32:
    """The uint32 threshold t with ``P(bits >= t) = 1 - rate`` up to 2^-32."""
    return np.uint32(min(round(rate * MAX_ELEMENTS), MAX_ELEMENTS - 1))
