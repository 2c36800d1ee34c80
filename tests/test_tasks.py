"""The task generators: structure, determinism, and the baselines the docs quote."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrnn.losses import mean_squared_error, softmax_cross_entropy
from jrnn.tasks import (
    TASKS,
    adding_problem,
    copy_task,
    digits_batch,
    digits_test_set,
    get_task,
    load_digits_sequences,
    sine_wave,
)


@pytest.mark.parametrize("seq_len", [2, 3, 150])
def test_adding_problem_structure(seq_len):
    batch = adding_problem(jax.random.PRNGKey(0), 64, seq_len)
    xs, y = np.asarray(batch.inputs), np.asarray(batch.targets)
    assert xs.shape == (64, seq_len, 2) and y.shape == (64, 1) and batch.lengths is None
    values, markers = xs[..., 0], xs[..., 1]
    assert np.all((values >= 0) & (values < 1))
    assert np.all(markers.sum(1) == 2) and set(np.unique(markers)) <= {0.0, 1.0}
    half = seq_len // 2
    assert np.all(markers[:, :half].sum(1) == 1) and np.all(markers[:, half:].sum(1) == 1)
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(1), rtol=1e-6)


def test_adding_baseline_is_the_variance_of_the_sum():
    batch = adding_problem(jax.random.PRNGKey(1), 20000, 50)
    constant = mean_squared_error(jnp.ones_like(batch.targets), batch.targets)
    assert abs(float(constant) - TASKS["adding"].baseline(50)) < 0.01  # 1/6, sampled


def test_generators_are_keyed():
    for sample in (adding_problem, sine_wave):
        a, b = sample(jax.random.PRNGKey(0), 4, 10), sample(jax.random.PRNGKey(0), 4, 10)
        c = sample(jax.random.PRNGKey(1), 4, 10)
        np.testing.assert_array_equal(a.inputs, b.inputs)
        assert not np.array_equal(a.inputs, c.inputs)


@pytest.mark.parametrize("blanks", [1, 5, 100])
def test_copy_task_structure_and_baseline(blanks):
    batch = copy_task(jax.random.PRNGKey(2), 32, blanks)
    total = blanks + 20
    xs, y = np.asarray(batch.inputs), np.asarray(batch.targets)
    assert xs.shape == (32, total, 10) and y.shape == (32, total) and y.dtype == np.int32
    symbols = xs.argmax(-1)
    assert np.all(xs.sum(-1) == 1)  # one-hot
    assert np.all((symbols[:, :10] >= 1) & (symbols[:, :10] <= 8))
    assert np.all(symbols[:, 10 + blanks - 1] == 9)  # the delimiter after T - 1 blanks
    rest = np.delete(symbols[:, 10:], blanks - 1, axis=1)
    assert not np.any(rest)  # blanks elsewhere
    assert not np.any(y[:, : total - 10])
    np.testing.assert_array_equal(y[:, -10:], symbols[:, :10])
    # the memoryless strategy: blanks with certainty, then uniform over the 8 symbols
    logits = np.full((32, total, 10), -np.inf)
    logits[:, : total - 10, 0] = 0.0
    logits[:, total - 10 :, 1:9] = 0.0
    ce = softmax_cross_entropy(jnp.asarray(logits), batch.targets)
    assert math.isclose(float(ce), TASKS["copy"].baseline(blanks), rel_tol=1e-5)  # float32
    assert math.isclose(TASKS["copy"].baseline(blanks), 10 * math.log(8) / (blanks + 20))


def test_sine_wave_is_a_one_step_forecast():
    batch = sine_wave(jax.random.PRNGKey(3), 5000, 40)
    assert batch.inputs.shape == batch.targets.shape == (5000, 40, 1)
    np.testing.assert_array_equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    zero = mean_squared_error(jnp.zeros_like(batch.targets), batch.targets)
    assert abs(float(zero) - TASKS["sine"].baseline(40)) < 0.02  # 13/24, sampled


def test_digits_split_and_batches():
    train_x, train_y = load_digits_sequences("train")
    test_x, _test_y = load_digits_sequences("test")
    assert train_x.shape == (1437, 8, 8) and test_x.shape == (360, 8, 8)
    assert set(np.unique(train_y)) == set(range(10)) and train_y.dtype == np.int32
    assert train_x.min() >= 0 and train_x.max() <= 1
    flat = {row.tobytes() for row in train_x.reshape(len(train_x), -1)}
    overlap = sum(row.tobytes() in flat for row in test_x.reshape(len(test_x), -1))
    assert overlap <= 2  # the data set repeats a couple of images; the split is disjoint by index
    batch = digits_batch(jax.random.PRNGKey(0), 16)
    assert batch.inputs.shape == (16, 8, 8) and batch.targets.shape == (16,)
    test = get_task("digits").test_set()
    np.testing.assert_array_equal(test.inputs, test_x)


def test_synthetic_test_sets_are_fixed():
    task = get_task("adding")
    a, b = task.test_set(20, 10), task.test_set(20, 10)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    assert a.inputs.shape == (10, 20, 2)


def test_task_bad_input():
    with pytest.raises(ValueError, match="unknown task 'parity'"):
        get_task("parity")
    with pytest.raises(ValueError, match="seq_len >= 2"):
        adding_problem(jax.random.PRNGKey(0), 2, 1)
    with pytest.raises(ValueError, match="batch must be a positive int"):
        sine_wave(jax.random.PRNGKey(0), 0, 5)
    with pytest.raises(ValueError, match="blank_len must be a positive int"):
        copy_task(jax.random.PRNGKey(0), 2, 0)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_digits_sequences("validation")
    with pytest.raises(ValueError, match="seq_len must be 8"):
        digits_batch(jax.random.PRNGKey(0), 2, 9)


def test_sizes_of_the_wrong_type_are_type_errors():
    with pytest.raises(TypeError, match="batch must be a positive int"):
        adding_problem(jax.random.PRNGKey(0), 2.0, 5)
    with pytest.raises(TypeError, match="seq_len must be a positive int"):
        sine_wave(jax.random.PRNGKey(0), 2, "5")


def test_the_test_set_is_a_field_of_the_task():
    digits = get_task("digits")
    np.testing.assert_array_equal(digits.test_set().inputs, digits_test_set().inputs)
    with pytest.raises(ValueError, match="seq_len must be 8"):
        digits.test_set(9)
    # a task of one's own brings its own test set; nothing is keyed on the name
    mine = get_task("adding")._replace(
        name="mine", test_set=lambda seq_len=None, size=3: "held out"
    )
    assert mine.test_set() == "held out"


def test_copy_baseline_accuracy_is_the_blank_strategys():
    blanks = 10
    batch = copy_task(jax.random.PRNGKey(5), 4000, blanks)
    guess = np.zeros(batch.targets.shape, np.int32)
    guess[:, -10:] = 1  # any one symbol: right 1/8 of the time
    accuracy = float(np.mean(guess == np.asarray(batch.targets)))
    assert abs(accuracy - TASKS["copy"].baseline_accuracy(blanks)) < 0.005
    assert TASKS["adding"].baseline_accuracy is None
