import os

import jax
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "jrnn",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=bool(os.environ.get("CI")),
)
# a quick local pass: HYPOTHESIS_PROFILE=dev pytest ...
settings.register_profile("dev", parent=settings.get_profile("jrnn"), max_examples=4)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "jrnn"))


@pytest.fixture
def x64():
    """Runs the test with 64-bit types enabled, restoring the setting afterwards."""
    with jax.enable_x64(True):
        yield
