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
  (0.93 at T = 100, ``task.baseline_accuracy``). What measures memory is the accuracy
  over the last ten steps alone, ``recall_accuracy`` (chance 1/8): ``jrnn train`` reports
  it.
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
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import losses
from jrnn._src import names
from jrnn._src.extras import missing_extra
from jrnn._src.validate import positive_int
from jrnn.batch import Batch
from jrnn.data import Dataset, load, loss_option, output_option

__all__ = [
    "TASKS",
    "Task",
    "adding_problem",
    "copy_task",
    "data_info",
    "data_task",
    "digits_batch",
    "digits_test_set",
    "get_task",
    "load_digits_sequences",
    "recorded_task",
    "run_task",
    "sine_wave",
]

COPY_SYMBOLS = 10  # remembered symbols in the copy task
COPY_ALPHABET = 10  # 0 blank, 1..8 symbols, 9 delimiter
TEST_KEY = 20150402  # the fixed key of every synthetic test set (independent of --seed)


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
    batch = positive_int("batch", batch)
    seq_len = positive_int("seq_len", seq_len)
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
    batch = positive_int("batch", batch)
    blank_len = positive_int("blank_len", blank_len)
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
    batch = positive_int("batch", batch)
    seq_len = positive_int("seq_len", seq_len)
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
    except ModuleNotFoundError as err:
        raise missing_extra(err, "the digits task") from None
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
    batch = positive_int("batch", batch)
    if seq_len not in (None, 8):
        raise ValueError(f"digits are 8 rows: seq_len must be 8; got {seq_len}")
    images, labels = load_digits_sequences("train")
    idx = jax.random.randint(key, (batch,), 0, len(labels))
    return Batch(jnp.asarray(images)[idx], jnp.asarray(labels)[idx])


def digits_test_set(seq_len: int | None = None, size: int | None = None) -> Batch:
    """The digits' 360 held-out images (``seq_len`` must be ``None`` or 8; ``size`` is
    ignored: the split is fixed)."""
    del size
    if seq_len not in (None, 8):
        raise ValueError(f"digits are 8 rows: seq_len must be 8; got {seq_len}")
    images, labels = load_digits_sequences("test")
    return Batch(jnp.asarray(images), jnp.asarray(labels))


def _synthetic_test_set(
    sample: Callable[[jax.Array, int, int], Batch], seq_len: int, size: int = 1000
) -> Batch:
    # one compiled program (as the training batches are drawn), not one per eager op
    return jax.jit(sample, static_argnums=(1, 2))(jax.random.PRNGKey(TEST_KEY), size, seq_len)


class Task(NamedTuple):
    """A task as the trainer sees it.

    Attributes:
        name: the CLI name.
        input_size: features per step ``F``.
        output_size: readout width ``O`` (classes for cross-entropy).
        loss: ``"mse"`` or ``"cross_entropy"``.
        return_sequences: many-to-many (``True``) or many-to-one.
        fixed_seq_len: the task only has this length (digits, your own data), else
            ``None`` (a run's ``seq_len`` is its config's: :data:`jrnn.run_config.TASK_DEFAULTS`).
        sample: ``sample(key, batch, seq_len) -> Batch`` (jit-able).
        test_set: ``test_set(seq_len, size=1000) -> Batch``, the fixed test set: the
            digits' held-out split (``seq_len`` may be omitted), or ``size`` sequences of
            ``seq_len`` steps drawn from a fixed key (the same for every training seed).
        baseline: ``baseline(seq_len)``: the loss of the memoryless baseline.
        baseline_name: what that baseline predicts.
        baseline_accuracy: ``baseline_accuracy(seq_len)``, that baseline's accuracy, for
            classification tasks (``None`` for regression).
        recall_steps: the last steps whose targets are the remembered symbols (the copy
            task's ten), scored alone as ``"recall_accuracy"``; else ``None``.
        recall_chance: the recall accuracy of a guess (1/8 for the copy task).
        val_set: ``val_set()``, the held-out set the evaluations during training use where
            the test set is kept for the end (your own data's validation split); ``None``:
            they use ``test_set``.
        min_seq_len: the fewest steps the task has (the adding problem's two markers need
            two).
    """

    name: str
    input_size: int
    output_size: int
    loss: str
    return_sequences: bool
    fixed_seq_len: int | None
    sample: Callable[[jax.Array, int, int], Batch]
    test_set: Callable[..., Batch]
    baseline: Callable[[int], float]
    baseline_name: str
    baseline_accuracy: Callable[[int], float] | None = None
    recall_steps: int | None = None
    recall_chance: float | None = None
    val_set: Callable[..., Batch] | None = None
    min_seq_len: int = 1


def _synthetic(name: str, sample: Callable[[jax.Array, int, int], Batch], **fields) -> Task:
    test_set = functools.partial(_synthetic_test_set, sample)
    return Task(name, fixed_seq_len=None, sample=sample, test_set=test_set, **fields)


TASKS: dict[str, Task] = {
    "adding": _synthetic(
        "adding",
        adding_problem,
        input_size=2,
        output_size=1,
        loss="mse",
        return_sequences=False,
        baseline=lambda t: 1.0 / 6.0,
        baseline_name="the constant 1",
        min_seq_len=2,
    ),
    "copy": _synthetic(
        "copy",
        copy_task,
        input_size=COPY_ALPHABET,
        output_size=COPY_ALPHABET,
        loss="cross_entropy",
        return_sequences=True,
        baseline=lambda t: COPY_SYMBOLS * math.log(8) / (t + 2 * COPY_SYMBOLS),
        baseline_name="blanks, then uniform",
        baseline_accuracy=lambda t: (t + COPY_SYMBOLS + COPY_SYMBOLS / 8) / (t + 2 * COPY_SYMBOLS),
        recall_steps=COPY_SYMBOLS,
        recall_chance=1 / 8,
    ),
    "sine": _synthetic(
        "sine",
        sine_wave,
        input_size=1,
        output_size=1,
        loss="mse",
        return_sequences=True,
        baseline=lambda t: 13.0 / 24.0,
        baseline_name="zero",
    ),
    "digits": Task(
        "digits",
        input_size=8,
        output_size=10,
        loss="cross_entropy",
        return_sequences=False,
        fixed_seq_len=8,
        sample=digits_batch,
        test_set=digits_test_set,
        baseline=lambda t: math.log(10),
        baseline_name="uniform over 10 classes",
        baseline_accuracy=lambda t: 0.1,
    ),
}
names.agree("tasks", names.TASKS, TASKS)


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name``; a ``ValueError`` lists the known ones."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}") from None


def run_task(config: Any) -> Task:
    """The task a run (:class:`~jrnn.run_config.RunConfig`) trains: ``config.task``'s, or
    for ``jrnn train --data`` its file's, checked and split (:func:`data_task`; read once
    per file and modification time). Raises ``ValueError`` for a file that cannot be."""
    if config.task != "data":
        return get_task(config.task)
    path = Path(config.data).absolute()
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0  # jrnn.data.load says what is wrong with it
    return _file_task(
        str(path), mtime, config.loss, config.output, config.val_fraction, config.test_fraction
    )


@functools.cache
def _file_task(path: str, mtime: float, loss: str, output: str, val: float, test: float) -> Task:
    del mtime  # a key of the cache only: a file written anew is read anew
    data = load(path, loss=loss_option(loss), return_sequences=output_option(output))
    try:
        parts = data.split(val, test)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return data_task(Path(path).name, *parts)


def recorded_task(path: str, info: dict[str, Any]) -> Task:
    """The task of a ``--data`` run whose file is gone, from what its folder recorded
    (``config.json``'s ``data_info``): the model's sizes, its loss and readout, enough to
    load and predict; its training and test sets raise ``ValueError`` naming the file."""

    def gone(*_: Any, **__: Any) -> Any:
        raise ValueError(f"{path}: no such file (the run's data; its test split needs it)")

    return Task(
        Path(path).name,
        input_size=info["input_size"],
        output_size=info["output_size"],
        loss=info["loss"],
        return_sequences=info["return_sequences"],
        fixed_seq_len=info["seq_len"],
        sample=gone,
        test_set=gone,
        baseline=gone,
        baseline_name="(the file is gone)",
    )


def data_info(task: Task) -> dict[str, Any]:
    """What :func:`recorded_task` needs of a ``--data`` run's task."""
    return {
        "input_size": task.input_size,
        "output_size": task.output_size,
        "loss": task.loss,
        "return_sequences": task.return_sequences,
        "seq_len": task.fixed_seq_len,
    }


def data_task(name: str, train: Dataset, val: Dataset, test: Dataset) -> Task:
    """The task of your own sequences, split (:meth:`jrnn.data.Dataset.split`): batches drawn
    uniformly with replacement from ``train`` (on the device, inside the training loop's
    ``jit``), evaluations during training on ``val`` (on ``test`` if ``val`` is empty), the
    final one on ``test``. The baseline predicts the training targets' mean (MSE) or their
    class frequencies (cross-entropy; its accuracy is the most frequent class's)."""
    train_set, test_set = _on_device(train), _on_device(test)
    n, t = train.size, train.seq_len

    def sample(key: jax.Array, batch: int, seq_len: int | None = None) -> Batch:
        idx = jax.random.randint(key, (batch,), 0, n)
        lengths = None if train_set.lengths is None else train_set.lengths[idx]
        return Batch(train_set.inputs[idx], train_set.targets[idx], lengths)

    loss, accuracy = _baseline(train, test)
    return Task(
        name,
        input_size=train.input_size,
        output_size=train.output_size,
        loss=train.loss,
        return_sequences=train.return_sequences,
        fixed_seq_len=t,
        sample=sample,
        test_set=lambda seq_len=None, size=None: test_set,
        baseline=lambda seq_len: loss,
        baseline_name="the training targets' mean"
        if train.loss == "mse"
        else "the training classes' frequencies",
        baseline_accuracy=None if accuracy is None else lambda seq_len: accuracy,
        val_set=(lambda: _on_device(val)) if val.size else None,
    )


def _on_device(data: Dataset) -> Batch:
    return jax.tree.map(jnp.asarray, data.batch)  # a None (no lengths) stays None


def _baseline(train: Dataset, test: Dataset) -> tuple[float, float | None]:
    """The memoryless baseline's loss on ``test``, and its accuracy (classification), from
    the statistics of ``train``'s valid positions."""
    b = train.batch
    valid = np.ones(b.targets.shape[:2] if train.return_sequences else b.targets.shape[:1], bool)
    if train.return_sequences and b.lengths is not None:
        valid = np.arange(train.seq_len)[None, :] < b.lengths[:, None]
    shape = test.batch.targets.shape
    if train.loss == "mse":
        mean = b.targets[valid].mean(axis=0)  # (O,)
        guess = jnp.broadcast_to(jnp.asarray(mean), shape)
        return float(losses.mean_squared_error(guess, test.batch.targets, test.batch.lengths)), None
    counts = np.bincount(b.targets[valid], minlength=train.output_size)[: train.output_size]
    logits = np.log((counts + 1) / (counts.sum() + train.output_size))  # add-one: finite
    guess = jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (*shape, train.output_size))
    labels = jnp.asarray(test.batch.targets)  # below output_size: counted on the whole file
    return (
        float(losses.softmax_cross_entropy(guess, labels, test.batch.lengths)),
        float(losses.accuracy(guess, labels, test.batch.lengths)),
    )
