"""Your own sequences: arrays or an ``.npz`` file checked, read as a task, split, and turned
into :class:`~jrnn.batch.Batch` es in one call.

What a file (or :func:`from_arrays`) holds:

* ``inputs``: `(N, T, F)` numbers (floats; integers and booleans are converted);
* ``targets``: floats `(N, O)` (one output per sequence, many-to-one) or `(N, T, O)` (one per
  step, many-to-many), trained with the MSE; or integer classes `(N,)` (or a column
  `(N, 1)`) / `(N, T)`, trained with the softmax cross-entropy over ``max + 1`` classes;
* ``lengths`` (optional): `(N,)` integers in ``[1, T]``, the valid steps of each
  right-padded sequence (padding reaches no loss and no gradient).

The loss and the readout come from the targets' dtype and rank; ``loss=`` and
``return_sequences=`` say them instead (floats `(N,)` read as `(N, 1)`; with
``return_sequences=True``, floats `(N, T)` as `(N, T, 1)`; ``loss="mse"`` on integers
regresses them as floats). Every problem is one ``ValueError`` naming the key and the
shapes: a missing or unknown key, a wrong rank, NaN or inf, mismatched ``N`` or ``T``,
lengths out of range, negative classes.

In Python::

    data = jrnn.data.load("mine.npz")            # or jrnn.data.from_arrays(x, y)
    train, val, test = data.split()              # 80/10/10, the same split every time
    step = jrnn.make_train_step(optimizer, **data.options)
    params, opt_state, metrics = step(params, opt_state, train.batch)

and on the command line ``jrnn train --data mine.npz``, then ``jrnn eval RUN`` and
``jrnn predict RUN --data new.npz --out predictions.npy``.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import math
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jrnn.batch import Batch

__all__ = [
    "KEYS",
    "SPLIT_SEED",
    "Dataset",
    "check_inputs",
    "from_arrays",
    "load",
    "read_npz",
    "sha256",
]

KEYS = ("inputs", "targets", "lengths")
"""The arrays a file may hold (``lengths`` is optional)."""
SPLIT_SEED = 20150402
"""The seed of :meth:`Dataset.split`'s permutation: a file's test split is the same for every
run and every ``--seed``."""


class Dataset(NamedTuple):
    """Checked sequences with what training them needs.

    Attributes:
        batch: the arrays as a :class:`~jrnn.batch.Batch` (numpy: ``inputs`` float32,
            ``targets`` float32 or int32, ``lengths`` int32 or ``None``).
        loss: ``"mse"`` or ``"cross_entropy"``.
        return_sequences: many-to-many (an output per step) or many-to-one.
        output_size: the readout's width: ``O``, or the number of classes.
    """

    batch: Batch
    loss: str
    return_sequences: bool
    output_size: int

    @property
    def size(self) -> int:
        """``N``, the sequences."""
        return int(self.batch.inputs.shape[0])

    @property
    def input_size(self) -> int:
        """``F``, the features per step."""
        return int(self.batch.inputs.shape[2])

    @property
    def seq_len(self) -> int:
        """``T``, the steps of the (padded) sequences."""
        return int(self.batch.inputs.shape[1])

    @property
    def options(self) -> dict[str, Any]:
        """``loss`` and ``return_sequences``, as :func:`jrnn.make_train_step` and
        :func:`jrnn.evaluate` take them."""
        return {"loss": self.loss, "return_sequences": self.return_sequences}

    def take(self, index: Any) -> Dataset:
        """The sequences at ``index`` (an index array or a slice)."""
        b = self.batch
        lengths = None if b.lengths is None else b.lengths[index]
        return self._replace(batch=Batch(b.inputs[index], b.targets[index], lengths))

    def split(
        self, val_fraction: float = 0.1, test_fraction: float = 0.1
    ) -> tuple[Dataset, Dataset, Dataset]:
        """``(train, val, test)``: a fixed permutation (:data:`SPLIT_SEED`) cut by the
        fractions, each part at least one sequence (``val_fraction=0``: an empty one).

        Raises:
            ValueError: a fraction outside ``[0, 1)``, or too few sequences for the parts.
        """
        for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 <= f < 1:
                raise ValueError(f"{name} must lie in [0, 1); got {f}")
        n = self.size
        n_val, n_test = math.ceil(n * val_fraction), math.ceil(n * test_fraction)
        if n - n_val - n_test < 1:
            raise ValueError(
                f"{n} sequences cannot be split into train, {val_fraction:g} validation and "
                f"{test_fraction:g} test with a sequence left to train on"
            )
        order = np.random.default_rng(SPLIT_SEED).permutation(n)
        test, val = order[:n_test], order[n_test : n_test + n_val]
        return self.take(order[n_test + n_val :]), self.take(val), self.take(test)


def _where(key: str, source: str) -> str:
    return f"{source}: {key!r}" if source else key


def _float_array(name: str, value: Any, source: str) -> np.ndarray:
    a = np.asarray(value)
    if (
        a.dtype == object
        or not (np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.bool_))
        or np.issubdtype(a.dtype, np.complexfloating)
    ):
        raise ValueError(f"{_where(name, source)} must hold real numbers; got dtype {a.dtype}")
    a = a.astype(np.float32)
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{_where(name, source)} holds {int(bad.sum())} NaN or inf values (the first at "
            f"index {first}); a run on them could only diverge"
        )
    return a


def check_inputs(
    inputs: Any, lengths: Any = None, *, source: str = ""
) -> tuple[np.ndarray, np.ndarray | None]:
    """``inputs`` `(N, T, F)` as float32 and ``lengths`` `(N,)` as int32 (``None`` stays
    ``None``), checked as :func:`from_arrays` checks them: what a model's outputs need."""
    x = _float_array("inputs", inputs, source)
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(
            f"{_where('inputs', source)} must be (N, T, F) with N, T, F >= 1; got {x.shape}"
        )
    if lengths is None:
        return x, None
    n, t, _ = x.shape
    lengths = np.asarray(lengths)
    where = _where("lengths", source)
    if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(
            f"{where} must be ({n},) integers, one per sequence; got {lengths.shape} "
            f"{lengths.dtype}"
        )
    if lengths.min() < 1 or lengths.max() > t:
        raise ValueError(
            f"{where} must lie in [1, T = {t}]; got values in "
            f"[{int(lengths.min())}, {int(lengths.max())}]"
        )
    return x, lengths.astype(np.int32)


def from_arrays(
    inputs: Any,
    targets: Any,
    lengths: Any = None,
    *,
    loss: str | None = None,
    return_sequences: bool | None = None,
    source: str = "",
) -> Dataset:
    """Checks the arrays (see the module) and reads the loss and the readout from them.

    Args:
        inputs: `(N, T, F)` numbers.
        targets: floats `(N, O)` / `(N, T, O)`, or integer classes `(N,)` / `(N, T)`.
        lengths: optional `(N,)` valid steps, in ``[1, T]``.
        loss: ``"mse"`` or ``"cross_entropy"``; ``None``: from the targets' dtype.
        return_sequences: an output per step; ``None``: from the targets' rank.
        source: what the arrays are called in errors (e.g. a file's name).

    Raises:
        ValueError: the arrays do not fit together (the message names them and the shapes).
    """
    if loss not in (None, "mse", "cross_entropy"):
        raise ValueError(f"loss must be None, 'mse' or 'cross_entropy'; got {loss!r}")
    x, lengths = check_inputs(inputs, lengths, source=source)
    n, t, _ = x.shape
    y = np.asarray(targets)
    integer = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)
    loss = loss or ("cross_entropy" if integer else "mse")
    where_y = _where("targets", source)
    if y.shape[:1] != (n,):
        raise ValueError(f"{where_y} must have the inputs' N = {n} first; got {y.shape}")
    if loss == "cross_entropy":
        if not integer:
            raise ValueError(
                f"{where_y} must be integer classes for the cross-entropy; got dtype {y.dtype}"
            )
        if y.ndim == 2 and y.shape[1] == 1 and t != 1 and not return_sequences:
            y = y[:, 0]  # a column of labels, one per sequence
        many = y.ndim == 2 if return_sequences is None else return_sequences
        want = (n, t) if many else (n,)
        if y.shape != want:
            shown = "(N, T)" if many else "(N,)"
            raise ValueError(f"{where_y}: classes {shown} = {want} expected; got {y.shape}")
        if y.size and y.min() < 0:
            raise ValueError(f"{where_y}: classes must be >= 0; got {int(y.min())}")
        y = y.astype(np.int32)
        output_size = int(y.max()) + 1 if y.size else 1
    else:
        y = _float_array("targets", y, source)
        given = y.shape
        if y.ndim == 1:
            y = y[:, None]
        many = y.ndim == 3 if return_sequences is None else return_sequences
        if many and y.ndim == 2:
            y = y[:, :, None]
        if (many and (y.ndim != 3 or y.shape[1] != t)) or (not many and y.ndim != 2):
            shown = f"(N, T, O) with T = {t}" if many else "(N, O)"
            raise ValueError(f"{where_y} must be {shown} for the MSE; got {given}")
        output_size = int(y.shape[-1])
    return Dataset(Batch(x, y, lengths), loss, bool(many), output_size)


def read_npz(
    path: str | Path, need: tuple[str, ...] = ("inputs", "targets")
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (:data:`KEYS`); a ``ValueError`` for a file that is
    missing, not an ``.npz``, without the arrays ``need`` names, or with another key."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    for key in arrays:
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{path}: unexpected array {key!r}{hint}; expected {list(KEYS)}")
    for key in need:
        if key not in arrays:
            raise ValueError(
                f"{path}: no {key!r} array (it holds {sorted(arrays) or 'none'}); expected "
                "inputs (N, T, F), targets (N, O) / (N, T, O) floats or (N,) / (N, T) "
                "integer classes, and optionally lengths (N,)"
            )
    return arrays


def sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes: what a run folder keeps to know its ``--data`` file
    again (``config.json``'s ``data_sha256``). Read once per file, size and modification
    time (a run's start checks the file twice)."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).absolute()), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # the cache's key only: a file written anew is read anew
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(
    path: str | Path, *, loss: str | None = None, return_sequences: bool | None = None
) -> Dataset:
    """The :class:`Dataset` of an ``.npz`` file (:func:`read_npz`, then :func:`from_arrays`)."""
    arrays = read_npz(path)
    return from_arrays(
        arrays["inputs"],
        arrays["targets"],
        arrays.get("lengths"),
        loss=loss,
        return_sequences=return_sequences,
        source=str(path),
    )


def loss_option(loss: str) -> str | None:
    """``--loss``: ``"auto"`` is ``None`` (from the targets)."""
    return None if loss == "auto" else loss


def output_option(output: str) -> bool | None:
    """``--output``: ``"auto"`` is ``None`` (from the targets); ``"every"`` step or the
    ``"last"``."""
    return {"auto": None, "every": True, "last": False}[output]
