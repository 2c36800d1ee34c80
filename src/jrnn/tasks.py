"""Sequence tasks for training and benchmarking RNNs, generated from explicit PRNG keys.

Nothing is downloaded: the synthetic tasks are drawn with ``jax.random`` (so a whole
training loop, data included, can run inside one ``jit``), and the digits come from the
copy bundled with scikit-learn.

* ``adding``: the adding problem in the form Le, Jaitly & Hinton (2015) used for the
  IRNN. Two input channels: values ``U[0, 1]`` and a marker channel holding exactly two
  ones, one in each half of the sequence; the target is the sum of the two marked
  values. Predicting the constant 1 scores the variance of that sum, MSE = 1/6 ~ 0.167.
* ``copy``: the copy (memory) task of Arjovsky, Shah & Bengio (2016). Ten symbols from
  ``{1..8}``, then ``T`` blanks (``0``) of which the last is replaced by the delimiter
  ``9``, then ten more blanks; the model must output blanks and then, over the last ten
  steps, the ten symbols. The memoryless baseline (blanks, then a uniform guess among the
  8 symbols) scores cross-entropy ``10 log(8) / (T + 20)``. Accuracy counts every step,
  blanks included, so that baseline already scores ``(T + 10 + 10/8) / (T + 20)``
  (0.93 at T = 100): judge the copy task by its loss.
* ``sine``: forecasting a sine wave one step ahead (many-to-many regression): random
  amplitude in ``[0.5, 1.5]``, angular frequency in ``[0.1, 0.5]`` per step and phase.
  Predicting 0 scores ``E[A^2] / 2 = 13/24 ~ 0.542``.
* ``digits``: scikit-learn's 8x8 handwritten digits (1797 images) read row by row,
  8 steps of 8 pixel features in ``[0, 1]``, classified from the last state; a fixed
  80/20 split (1437 train, 360 test). Guessing scores accuracy ~0.1, cross-entropy log 10.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.batch import Batch

__all__ = [
    "TASKS",
    "Task",
    "adding_problem",
    "copy_task",
    "digits_batch",
    "get_task",
    "load_digits_sequences",
    "sine_wave",
]

COPY_SYMBOLS = 10  # remembered symbols in the copy task
COPY_ALPHABET = 10  # 0 blank, 1..8 symbols, 9 delimiter
TEST_KEY = 20150402  # the fixed key of every synthetic test set (independent of --seed)


def _check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def adding_problem(key: jax.Array, batch: int, seq_len: int) -> Batch:
    """A batch of the adding problem (Le et al. 2015).

    Args:
        key: PRNG key.
        batch: ``B``.
        seq_len: ``T`` >= 2.

    Returns:
        :class:`~jrnn.train.Batch` with inputs `(B, T, 2)` (values, markers) and targets
        `(B, 1)`.
    """
    batch = _check_positive("batch", batch)
    seq_len = _check_positive("seq_len", seq_len)
    if seq_len < 2:
        raise ValueError(f"the adding problem needs seq_len >= 2; got {seq_len}")
    k_val, k_first, k_second = jax.random.split(key, 3)
    values = jax.random.uniform(k_val, (batch, seq_len))
    half = seq_len // 2
    first = jax.random.randint(k_first, (batch,), 0, half)
    second = jax.random.randint(k_second, (batch,), half, seq_len)
    steps = jnp.arange(seq_len)[None, :]
    markers = ((steps == first[:, None]) | (steps == second[:, None])).astype(values.dtype)
    target = jnp.sum(values * markers, axis=1, keepdims=True)
    return Batch(jnp.stack([values, markers], axis=-1), target)


def copy_task(key: jax.Array, batch: int, blank_len: int) -> Batch:
    """A batch of the copy task (Arjovsky et al. 2016) with ``T = blank_len`` blanks.

    Returns:
        :class:`~jrnn.train.Batch` with one-hot inputs `(B, T + 20, 10)` and integer
        targets `(B, T + 20)` in ``[0, 9)``.
    """
    batch = _check_positive("batch", batch)
    blank_len = _check_positive("blank_len", blank_len)
    total = blank_len + 2 * COPY_SYMBOLS
    symbols = jax.random.randint(key, (batch, COPY_SYMBOLS), 1, 9)
    blanks = jnp.zeros((batch, blank_len - 1), symbols.dtype)
    delimiter = jnp.full((batch, 1), 9, symbols.dtype)
    tail = jnp.zeros((batch, COPY_SYMBOLS), symbols.dtype)
    inputs = jnp.concatenate([symbols, blanks, delimiter, tail], axis=1)  # (B, T + 20)
    targets = jnp.concatenate(
        [jnp.zeros((batch, total - COPY_SYMBOLS), symbols.dtype), symbols], axis=1
    )
    return Batch(jax.nn.one_hot(inputs, COPY_ALPHABET), targets.astype(jnp.int32))


def sine_wave(key: jax.Array, batch: int, seq_len: int) -> Batch:
    """A batch of one-step-ahead sine forecasting.

    Returns:
        :class:`~jrnn.train.Batch` with inputs `(B, T, 1)` (``x_0 .. x_{T-1}``) and
        targets `(B, T, 1)` (``x_1 .. x_T``).
    """
    batch = _check_positive("batch", batch)
    seq_len = _check_positive("seq_len", seq_len)
    k_a, k_w, k_p = jax.random.split(key, 3)
    amplitude = jax.random.uniform(k_a, (batch, 1), minval=0.5, maxval=1.5)
    omega = jax.random.uniform(k_w, (batch, 1), minval=0.1, maxval=0.5)
    phase = jax.random.uniform(k_p, (batch, 1), maxval=2 * math.pi)
    wave = amplitude * jnp.sin(omega * jnp.arange(seq_len + 1)[None, :] + phase)
    return Batch(wave[:, :-1, None], wave[:, 1:, None])


@functools.cache
def load_digits_sequences(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as sequences: images row by row, pixels scaled to [0, 1].

    Args:
        split: ``"train"`` (1437 images) or ``"test"`` (360), a fixed 80/20 split.

    Returns:
        ``(inputs, labels)``: `(N, 8, 8)` float32 and `(N,)` int32.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("the digits task needs scikit-learn: pip install scikit-learn") from err
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    labels = data.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(labels))
    cut = int(0.8 * len(labels))  # 1437 train, 360 test
    idx = order[:cut] if split == "train" else order[cut:]
    images, labels = images[idx], labels[idx]
    images.flags.writeable = labels.flags.writeable = False  # cached: shared by every caller
    return images, labels


def digits_batch(key: jax.Array, batch: int, seq_len: int | None = None) -> Batch:
    """A batch of training digits drawn uniformly with replacement.

    ``seq_len`` is accepted for the common task signature and must be ``None`` or 8.
    """
    batch = _check_positive("batch", batch)
    if seq_len not in (None, 8):
        raise ValueError(f"digits are 8 rows: seq_len must be 8; got {seq_len}")
    images, labels = load_digits_sequences("train")
    idx = jax.random.randint(key, (batch,), 0, len(labels))
    return Batch(jnp.asarray(images)[idx], jnp.asarray(labels)[idx])


class Task(NamedTuple):
    """A task as the trainer sees it.

    Attributes:
        name: the CLI name.
        input_size: features per step ``F``.
        output_size: readout width ``O`` (classes for cross-entropy).
        loss: ``"mse"`` or ``"cross_entropy"``.
        return_sequences: many-to-many (``True``) or many-to-one.
        default_seq_len: the ``seq_len`` used when none is given.
        fixed_seq_len: the task only has this length (digits), else ``None``.
        sample: ``sample(key, batch, seq_len) -> Batch`` (jit-able).
        baseline: ``baseline(seq_len)``: the loss of the memoryless baseline.
        baseline_name: what that baseline predicts.
    """

    name: str
    input_size: int
    output_size: int
    loss: str
    return_sequences: bool
    default_seq_len: int
    fixed_seq_len: int | None
    sample: Callable[[jax.Array, int, int], Batch]
    baseline: Callable[[int], float]
    baseline_name: str

    def test_set(self, seq_len: int | None = None, size: int = 1000) -> Batch:
        """The fixed test set: the digits' held-out split, or ``size`` sequences drawn
        from a fixed key (the same for every training seed)."""
        if self.name == "digits":
            images, labels = load_digits_sequences("test")
            return Batch(jnp.asarray(images), jnp.asarray(labels))
        seq_len = self.default_seq_len if seq_len is None else seq_len
        return self.sample(jax.random.PRNGKey(TEST_KEY), size, seq_len)


TASKS: dict[str, Task] = {
    "adding": Task(
        "adding",
        2,
        1,
        "mse",
        False,
        100,
        None,
        adding_problem,
        lambda t: 1.0 / 6.0,
        "the constant 1",
    ),
    "copy": Task(
        "copy",
        COPY_ALPHABET,
        COPY_ALPHABET,
        "cross_entropy",
        True,
        100,
        None,
        copy_task,
        lambda t: COPY_SYMBOLS * math.log(8) / (t + 2 * COPY_SYMBOLS),
        "blanks, then uniform",
    ),
    "sine": Task(
        "sine",
        1,
        1,
        "mse",
        True,
        100,
        None,
        sine_wave,
        lambda t: 13.0 / 24.0,
        "zero",
    ),
    "digits": Task(
        "digits",
        8,
        10,
        "cross_entropy",
        False,
        8,
        8,
        digits_batch,
        lambda t: math.log(10),
        "uniform over 10 classes",
    ),
}


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name``; a ``ValueError`` lists the known ones."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}") from None
