"""Your own activation: any elementwise callable, its derivative from JAX, checked in
float64 against autodiff; the built-ins passed as functions; the refusals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import enable_x64, random_problem, tree_rel_err

import jrnn
from jrnn import interop, parallel
from jrnn.activations import ACTIVATIONS, Activation, get_activation


def softsign(a):
    return a / (1 + jnp.abs(a))


def wave(a):  # not monotone: nothing tanh-like to lean on
    return jnp.sin(2 * a) / 2


def _problem(dtype=jnp.float64):
    k = jax.random.split(jax.random.PRNGKey(3), 4)
    params = jax.tree.map(lambda a: a.astype(dtype), jrnn.init_params(k[0], 3, 5))
    xs = 0.5 * jax.random.normal(k[1], (4, 7, 3), dtype)
    h0 = 0.3 * jax.random.normal(k[2], (4, 5), dtype)
    mask = jax.random.uniform(k[3], (4, 5), dtype) + 0.5
    return params, xs, h0, mask


# every pair of (reverse, lengths, mask) settings, for each function
SETTINGS = [
    (False, None, False),
    (True, [7, 3, 0, 5], False),
    (False, [7, 3, 0, 5], True),
    (True, None, True),
]
CASES = [(fn, *s) for fn in (jax.nn.gelu, softsign, wave) for s in SETTINGS]


@pytest.mark.parametrize(
    "fn,reverse,lengths,masked", CASES, ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)]
)
def test_bptt_of_a_callable_equals_autodiff_float64(fn, reverse, lengths, masked):
    """The hand-written BPTT with the derivative from JAX equals autodiff of the plain
    loop (grad="autodiff") to 1e-12 relative, for every array, with lengths, reverse and
    a recurrent mask (time-major and remat: below)."""
    with enable_x64():
        params, xs, h0, mask = _problem()
        options = {
            "activation": fn,
            "reverse": reverse,
            "lengths": None if lengths is None else jnp.array(lengths),
            "recurrent_mask": mask if masked else None,
        }

        def loss(p, x, h, grad):
            hs, h_last = jrnn.rnn(p, x, h, grad=grad, **options)
            return jnp.sum(jnp.sin(hs)) + jnp.sum(h_last**2)

        bptt = jax.grad(loss, argnums=(0, 1, 2))(params, xs, h0, "bptt")
        autodiff = jax.grad(loss, argnums=(0, 1, 2))(params, xs, h0, "autodiff")
        assert tree_rel_err(bptt, autodiff) <= 1e-12


@pytest.mark.parametrize("time_major,remat", [(True, None), (False, 3), (True, 2)])
def test_callable_with_time_major_and_remat(time_major, remat):
    with enable_x64():
        params, xs, h0, _ = _problem()
        xs = jnp.swapaxes(xs, 0, 1) if time_major else xs
        lengths = jnp.array([7, 3, 0, 5])

        def loss(p, x, grad, remat):
            hs, h_last = jrnn.rnn(
                p,
                x,
                h0,
                activation=softsign,
                time_major=time_major,
                lengths=lengths,
                remat=remat,
                grad=grad,
            )
            return jnp.sum(hs**2) + jnp.sum(h_last)

        want = jax.grad(loss)(params, xs, "autodiff", None)
        assert tree_rel_err(jax.grad(loss)(params, xs, "bptt", remat), want) <= 1e-12
        assert tree_rel_err(jax.grad(loss)(params, xs, "autodiff", remat), want) <= 1e-12


def test_check_grads_and_the_layers_take_a_callable():
    params, xs, _, _ = _problem(jnp.float32)
    report = jrnn.check_grads(params, xs, activation=jax.nn.gelu, lengths=np.array([7, 3, 0, 5]))
    assert report.ok(), report
    assert "activation=gelu" in report.table()
    model = jrnn.init_model(jax.random.PRNGKey(0), 3, 5, 2, num_layers=2)
    assert jrnn.check_grads(model, xs, activation=softsign, fd_entries=16, eps=1e-4).ok()
    bi = jrnn.BiRNNParams(params, params)
    assert jrnn.check_grads(bi, xs, activation=wave, fd_entries=16).ok()


def test_parallel_in_time_takes_a_callable():
    with enable_x64():
        params, xs, h0, _ = _problem()
        lengths = jnp.array([7, 3, 0, 5])
        got = parallel.forward(params, xs, h0, activation=softsign, lengths=lengths)
        want = jrnn.forward(params, xs, h0, activation=softsign, lengths=lengths)
        assert tree_rel_err(got[:2], want) <= 1e-10

        def loss(p, run):
            return jnp.sum(run(p, xs, h0, activation=softsign, lengths=lengths)[0] ** 2)

        assert (
            tree_rel_err(jax.grad(loss)(params, parallel.rnn), jax.grad(loss)(params, jrnn.rnn))
            <= 1e-10
        )


def test_builtins_passed_as_functions_are_the_builtins():
    for fn, name in ((jnp.tanh, "tanh"), (jax.nn.relu, "relu"), (jax.nn.identity, "linear")):
        assert get_activation(fn) is ACTIVATIONS[name]
    assert not get_activation(jax.nn.gelu).builtin
    params, xs, _, _ = _problem(jnp.float32)
    # the kernels run a built-in passed as a function
    got = jrnn.rnn(params, xs, activation=jax.nn.relu, impl="pallas")
    assert tree_rel_err(got, jrnn.rnn(params, xs, activation="relu")) <= 1e-5


def test_what_cannot_hold_a_callable_says_so_in_one_line():
    params, xs, _, _ = _problem(jnp.float32)
    with pytest.raises(ValueError, match=r"impl='pallas' runs the built-in activations.*'gelu'"):
        jrnn.rnn(params, xs, activation=jax.nn.gelu, impl="pallas")
    hs, _ = jrnn.rnn(params, xs, activation=jax.nn.gelu, impl="auto")  # the scan loop
    assert hs.shape == (4, 7, 5)
    with pytest.raises(ValueError, match=r"to_torch: PyTorch's nn.RNN cannot hold .*'softsign'"):
        interop.to_torch(params, activation=softsign)
    with pytest.raises(ValueError, match=r"to_keras: Keras' SimpleRNN cannot hold .*'wave'"):
        interop.to_keras(params, activation=wave)
    with pytest.raises(
        TypeError, match=r"activation must be a string, one of .* or an elementwise"
    ):
        jrnn.rnn(params, xs, activation=3)


def test_an_activation_of_your_own_with_its_derivative(x64):
    """An Activation with the derivative written from the output: the BPTT uses it as given,
    check_grads holds it against autodiff, and the kernels refuse it (built-ins only)."""
    softsign = Activation("softsign", jax.nn.soft_sign, lambda h: (1 - jnp.abs(h)) ** 2)
    params, xs, h0, _ = random_problem(jax.random.PRNGKey(3))
    assert jrnn.check_grads(params, xs, h0, activation=softsign).ok()
    act = get_activation(softsign)
    assert act.fn is softsign.fn and not act.builtin and act.from_output
    # a claim to be a built-in is not taken from outside
    assert not get_activation(softsign._replace(builtin=True)).builtin
    with pytest.raises(ValueError, match=r"impl='pallas' runs the built-in activations"):
        jrnn.rnn(params, xs, h0, activation=softsign, impl="pallas")
    with pytest.raises(TypeError, match="grad_from_output must be callable or None"):
        get_activation(Activation("bad", jnp.tanh, "1 - h**2"))
