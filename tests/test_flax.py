"""jrnn.flax.SimpleRNN against flax linen's own nn.RNN(nn.SimpleCell): params, outputs,
gradients and a training step, given the same weights."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import serialization
from helpers import FLAX_CASES as CASES
from helpers import enable_x64, rel_err, scopes, tol, tree_rel_err

import jrnn
import jrnn.flax as jflax

B, T, F, H = 3, 5, 2, 4
LENGTHS = np.array([5, 2, 0])  # full, padded, empty (flax's carry then wraps to the last step)
ACTS = {"tanh": nn.tanh, "relu": nn.relu, "linear": jax.nn.identity}


def _models(activation="tanh", residual=False, dtype=jnp.float32, **kw):
    cell = nn.SimpleCell(H, activation_fn=ACTS[activation], residual=residual, param_dtype=dtype)
    return nn.RNN(cell, **kw), jflax.SimpleRNN(cell, **kw)


def _inputs(dtype=np.float32, time_major=False):
    """xs `(B, T, F)` (`(T, B, F)` if time-major), h0 `(B, H)` and a NumPy generator."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, F)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((B, H))).astype(dtype)
    return jnp.asarray(np.swapaxes(x, 0, 1) if time_major else x), jnp.asarray(h0), rng


def _loss_and_grads(model, variables, x, h0, r, s, **call):
    """A random linear loss of (carry, outputs), its gradients w.r.t. params, x (and h0) and
    the module's output, in one jitted call."""

    def loss(variables, x, h0):
        out = model.apply(variables, x, initial_carry=h0, **call)
        carry, outputs = out if call.get("return_carry") else (None, out)
        value = jnp.sum(outputs * r)
        return (value if carry is None else value + jnp.sum(carry * s)), out

    argnums = (0, 1, 2) if h0 is not None else (0, 1)
    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums, has_aux=True))(variables, x, h0)
    return grads, out


@pytest.mark.parametrize(
    "activation,reverse,keep_order,seq_lengths,time_major,initial_carry,return_carry", CASES
)
def test_outputs_and_gradients_equal_flax(
    activation, reverse, keep_order, seq_lengths, time_major, initial_carry, return_carry
):
    ref, mine = _models(activation, reverse=reverse, keep_order=keep_order, time_major=time_major)
    x, h0, rng = _inputs(time_major=time_major)
    h0 = h0 if initial_carry else None
    variables = ref.init(jax.random.key(0), x)
    call = {"seq_lengths": LENGTHS if seq_lengths else None, "return_carry": return_carry}
    out_shape = (T, B, H) if time_major else (B, T, H)
    r, s = rng.standard_normal(out_shape), rng.standard_normal((B, H))
    g_ref, o_ref = _loss_and_grads(ref, variables, x, h0, r, s, **call)
    g_mine, o_mine = _loss_and_grads(mine, variables, x, h0, r, s, **call)
    assert jax.tree.structure(o_mine) == jax.tree.structure(o_ref)
    assert tree_rel_err(o_mine, o_ref) <= tol(np.float32, "forward")
    assert jax.tree.structure(g_mine) == jax.tree.structure(g_ref)
    assert tree_rel_err(g_mine, g_ref) <= tol(np.float32, "grad")


def test_float64_outputs_and_gradients_equal_flax_with_a_residual_cell():
    with enable_x64(True):
        ref, mine = _models("tanh", True, jnp.float64, reverse=True, return_carry=True)
        x, h0, rng = _inputs(np.float64)
        variables = ref.init(jax.random.key(0), x)
        assert variables["params"]["cell"]["i"]["kernel"].dtype == jnp.float64
        r, s = rng.standard_normal((B, T, H)), rng.standard_normal((B, H))
        call = {"seq_lengths": LENGTHS, "return_carry": True}
        g_ref, o_ref = _loss_and_grads(ref, variables, x, h0, r, s, **call)
        g_mine, o_mine = _loss_and_grads(mine, variables, x, h0, r, s, **call)
        assert o_mine[1].dtype == jnp.float64
        assert tree_rel_err(o_mine, o_ref) <= tol(np.float64, "forward")
        assert tree_rel_err(g_mine, g_ref) <= tol(np.float64, "grad")


def test_init_draws_flaxs_param_tree_and_values():
    ref, mine = _models("relu")
    x, _, _ = _inputs()
    v_ref = ref.init(jax.random.key(3), x)
    v_mine = mine.init(jax.random.key(3), x)
    shapes = jax.tree.map(jnp.shape, v_mine)
    assert shapes == {
        "params": {"cell": {"i": {"kernel": (F, H), "bias": (H,)}, "h": {"kernel": (H, H)}}}
    }
    assert jax.tree.structure(v_mine) == jax.tree.structure(v_ref)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), v_mine, v_ref))


def test_a_flax_checkpoint_loads_unchanged_both_ways():
    ref, mine = _models(return_carry=True)
    x, h0, _ = _inputs()
    v_flax = ref.init(jax.random.key(4), x)
    v_jrnn = mine.init(jax.random.key(5), x)  # another key: a template with other values
    restored = serialization.from_bytes(v_jrnn, serialization.to_bytes(v_flax))
    out = mine.apply(restored, x, initial_carry=h0)
    assert tree_rel_err(out, ref.apply(v_flax, x, initial_carry=h0)) <= 1e-5
    back = serialization.from_bytes(v_flax, serialization.to_bytes(v_jrnn))
    assert tree_rel_err(ref.apply(back, x), mine.apply(v_jrnn, x)) <= 1e-5
    # the weights are jrnn's params under flax's names
    p = restored["params"]["cell"]
    params = jrnn.RNNParams(p["i"]["kernel"], p["h"]["kernel"], p["i"]["bias"])
    hs, h_last = jrnn.forward(params, x, h0)
    assert rel_err(out[1], hs) <= 1e-5 and rel_err(out[0], h_last) <= 1e-5


def test_gradients_run_jrnns_hand_written_bptt():
    _, mine = _models()
    x, _, _ = _inputs()
    variables = mine.init(jax.random.key(0), x)
    assert "jrnn.bptt" in scopes(jax.grad(lambda v: jnp.sum(mine.apply(v, x))), variables)


def test_more_batch_axes_unbatched_input_and_jit():
    ref, mine = _models(return_carry=True, reverse=True)
    x = jnp.asarray(np.random.default_rng(6).standard_normal((2, 3, T, F)), jnp.float32)
    variables = ref.init(jax.random.key(0), x)
    assert tree_rel_err(jax.jit(mine.apply)(variables, x), ref.apply(variables, x)) <= 1e-5
    # seq_lengths with two batch axes (flax's nn.RNN takes one there): equal to one flat batch
    lengths = np.array([[5, 1, 3], [0, 2, 4]])
    carry, out = mine.apply(variables, x, seq_lengths=lengths)
    c_ref, o_ref = ref.apply(variables, x.reshape(6, T, F), seq_lengths=lengths.reshape(6))
    assert rel_err(carry, c_ref.reshape(2, 3, H)) <= 1e-5
    assert rel_err(out, o_ref.reshape(2, 3, T, H)) <= 1e-5
    # no batch axis: (T, F)
    assert tree_rel_err(mine.apply(variables, x[0, 0]), ref.apply(variables, x[0, 0])) <= 1e-5


def test_training_steps_update_as_flaxs():
    optimizer = optax.adam(0.05)
    ref, mine = _models()
    x, _, _ = _inputs()
    y = jnp.sin(jnp.arange(B * T * H, dtype=jnp.float32)).reshape(B, T, H)

    def make_step(model):
        @jax.jit
        def step(variables, state):
            loss, grads = jax.value_and_grad(
                lambda v: jnp.mean((model.apply(v, x, seq_lengths=LENGTHS) - y) ** 2)
            )(variables)
            updates, state = optimizer.update(grads, state, variables)
            return optax.apply_updates(variables, updates), state, loss

        return step

    variables = ref.init(jax.random.key(0), x)
    runs = {}
    for name, model in (("flax", ref), ("jrnn", mine)):
        v, state, losses = variables, optimizer.init(variables), []
        step = make_step(model)
        for _ in range(4):
            v, state, loss = step(v, state)
            losses.append(float(loss))
        runs[name] = v, losses
    (v_ref, l_ref), (v_mine, l_mine) = runs["flax"], runs["jrnn"]
    assert l_mine[-1] < l_mine[0]
    np.testing.assert_allclose(l_mine, l_ref, rtol=1e-5)
    assert tree_rel_err(v_mine, v_ref) <= 1e-5
    assert tree_rel_err(v_mine, variables) > 1e-3  # the step moved the weights


@pytest.mark.parametrize(
    "cell,error,match",
    [
        (nn.SimpleCell(H, activation_fn="tanh"), TypeError, "activation_fn must be callable"),
        (nn.GRUCell(H), TypeError, r"cell must be a flax\.linen\.SimpleCell; got GRUCell"),
    ],
)
def test_unsupported_cells_are_refused(cell, error, match):
    with pytest.raises(error, match=match):
        jflax.SimpleRNN(cell)


@pytest.mark.parametrize(
    "fn", [nn.gelu, jnp.sin, lambda a: a / (1 + jnp.abs(a))], ids=["gelu", "sin", "softsign"]
)
def test_any_activation_fn_equals_flax(fn):
    """A cell's own activation_fn runs as flax runs it: outputs and gradients (jrnn's BPTT
    takes its derivative from JAX); grad="autodiff" gives forward mode through the module."""
    cell = nn.SimpleCell(H, activation_fn=fn)
    ref, mine = nn.RNN(cell, return_carry=True), jflax.SimpleRNN(cell, return_carry=True)
    x, h0, _ = _inputs()
    variables = ref.init(jax.random.key(0), x)

    def loss(model, v):
        carry, out = model.apply(v, x, initial_carry=h0)
        return jnp.sum(out**2) + jnp.sum(jnp.sin(carry))

    assert (
        tree_rel_err(
            mine.apply(variables, x, initial_carry=h0), ref.apply(variables, x, initial_carry=h0)
        )
        <= 1e-6
    )
    assert (
        tree_rel_err(
            jax.grad(partial(loss, mine))(variables), jax.grad(partial(loss, ref))(variables)
        )
        <= 1e-5
    )
    forward_mode = jflax.SimpleRNN(cell, grad="autodiff")
    tangent = jax.jvp(lambda x: forward_mode.apply(variables, x), (x,), (jnp.ones_like(x),))[1]
    want = jax.jvp(lambda x: nn.RNN(cell).apply(variables, x), (x,), (jnp.ones_like(x),))[1]
    assert rel_err(tangent, want) <= 1e-5


def test_bad_arguments_name_themselves():
    _, mine = _models()
    x, h0, _ = _inputs()
    variables = mine.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"inputs have 3 features .* \(2, hidden_size\)"):
        mine.apply(variables, jnp.ones((B, T, 3)))
    with pytest.raises(ValueError, match=r"initial_carry must have shape .* \(3, 4\).*got \(4,\)"):
        mine.apply(variables, x, initial_carry=h0[0])
    with pytest.raises(ValueError, match=r"seq_lengths must have the batch shape \(3,\)"):
        mine.apply(variables, x, seq_lengths=np.array([1, 2]))
    with pytest.raises(TypeError, match="seq_lengths must be integers"):
        mine.apply(variables, x, seq_lengths=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="inputs must be"):
        mine.apply(variables, jnp.ones((F,)))
    with pytest.raises(ValueError, match="impl must be one of"):
        jflax.SimpleRNN(nn.SimpleCell(H), impl="cuda")
