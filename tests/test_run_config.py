"""RunConfig: one description of a run's options, its checks and what a resume may change."""

from __future__ import annotations

import dataclasses

import pytest

from jrnn.run_config import COSMETIC, STRUCTURAL, TASK_DEFAULTS, TRAJECTORY, RunConfig
from jrnn.tasks import TASKS


def test_every_field_says_what_a_resume_may_do_with_it():
    for field in dataclasses.fields(RunConfig):
        assert field.metadata["resume"] in (STRUCTURAL, TRAJECTORY, COSMETIC), field.name
        assert field.metadata["help"], field.name


def test_every_task_has_defaults_and_they_apply():
    assert set(TASK_DEFAULTS) == {*TASKS, "data"}  # the built-in tasks and your own data
    digits = RunConfig.for_task("digits")
    # the README's measured 98% digits run (experiments/digits.sh)
    assert (digits.activation, digits.hidden, digits.lr, digits.batch, digits.steps) == (
        "tanh",
        128,
        3e-3,
        64,
        3000,
    )
    assert RunConfig.for_task("copy", hidden=7).hidden == 7  # a given option wins
    assert RunConfig() == RunConfig.for_task("adding")


def test_round_trip_and_old_files():
    config = RunConfig.for_task("sine", lr=0.01)
    assert RunConfig.from_dict(config.to_dict()) == config
    old = {"task": "digits", "hidden": 128, "clipped": True, "warmed_up": False, "seq_len": 8}
    assert RunConfig.from_dict(old).hidden == 128  # unknown keys ignored, the rest defaulted


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"hidden": 0}, ValueError, "hidden must be positive; got 0"),
        ({"hidden": 2.5}, TypeError, "hidden must be an int; got float 2.5"),
        ({"lr": "1e-3"}, TypeError, "lr must be a float"),
        ({"bias_init": "identity"}, ValueError, "bias_init must be one of"),
        ({"seed": 2**32}, ValueError, "seed must lie in [0, 2^32)"),
        ({"warmup": 10, "steps": 10}, ValueError, "warmup (10) must be below steps (10)"),
        ({"seq_len": 1}, ValueError, "the adding task needs at least 2 steps"),
    ],
)
def test_bad_options_name_themselves(options, error, message):
    with pytest.raises(error) as info:
        RunConfig.for_task("adding", **options)
    assert message in str(info.value)


def test_resume_changes_are_classified():
    saved = RunConfig.for_task("adding", steps=100, schedule="constant")
    changes = saved.replace(lr=0.1, seed=3, steps=200, hidden=9, clip=0.0).resume_changes(saved)
    assert changes[STRUCTURAL] == [("hidden", 64, 9), ("clip", 1.0, 0.0)]
    assert changes[TRAJECTORY] == [("lr", 0.001, 0.1)]
    assert changes[COSMETIC] == [("steps", 100, 200), ("seed", 0, 3)]
    cosine = saved.replace(schedule="cosine")
    assert cosine.replace(steps=200).resume_changes(cosine)[TRAJECTORY] == [("steps", 100, 200)]
