"""jrnn.nnx.SimpleRNN against flax NNX's own nnx.RNN(nnx.SimpleCell): state, outputs,
gradients and Optimizer steps, given the same weights."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import FLAX_CASES as CASES
from helpers import enable_x64, rel_err, scopes, tol, tree_rel_err

import jrnn
import jrnn.nnx as jnnx

B, T, F, H = 3, 5, 2, 4
LENGTHS = np.array([5, 2, 0])  # full, padded, empty (nnx's carry then wraps to the last step)
ACTS = {"tanh": nnx.tanh, "relu": nnx.relu, "linear": nnx.identity, "gelu": nnx.gelu}


def _cell(activation="tanh", residual=False, dtype=jnp.float32, seed=0):
    return nnx.SimpleCell(
        F,
        H,
        activation_fn=ACTS[activation],
        residual=residual,
        dtype=dtype,
        param_dtype=dtype,
        rngs=nnx.Rngs(seed),
    )


def _models(activation="tanh", residual=False, dtype=jnp.float32, **kw):
    """nnx's model and jrnn's, each with its own cell drawn from the same seed."""
    return (
        nnx.RNN(_cell(activation, residual, dtype), **kw),
        jnnx.SimpleRNN(_cell(activation, residual, dtype), **kw),
    )


def _inputs(dtype=np.float32, time_major=False):
    """xs `(B, T, F)` (`(T, B, F)` if time-major), h0 `(B, H)` and a NumPy generator."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, F)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((B, H))).astype(dtype)
    return jnp.asarray(np.swapaxes(x, 0, 1) if time_major else x), jnp.asarray(h0), rng


def _pure(state):
    return nnx.to_pure_dict(state)


def _loss_and_grads(model, x, h0, r, s, **call):
    """A random linear loss of (carry, outputs): its gradients w.r.t. the model's Params, x
    (and h0) and the module's output, under nnx.jit and nnx.value_and_grad."""

    def loss(model, x, h0):
        out = model(x, initial_carry=h0, **call)
        carry, outputs = out if call.get("return_carry") else (None, out)
        value = jnp.sum(outputs * r)
        return (value if carry is None else value + jnp.sum(carry * s)), out

    argnums = (0, 1, 2) if h0 is not None else (0, 1)

    @nnx.jit
    def run(model, x, h0):
        return nnx.value_and_grad(loss, argnums=argnums, has_aux=True)(model, x, h0)

    (_, out), (g_model, *g_arrays) = run(model, x, h0)
    return (_pure(g_model), *g_arrays), out


@pytest.mark.parametrize(
    "activation,reverse,keep_order,seq_lengths,time_major,initial_carry,return_carry", CASES
)
def test_outputs_and_gradients_equal_nnx(
    activation, reverse, keep_order, seq_lengths, time_major, initial_carry, return_carry
):
    ref, mine = _models(activation, reverse=reverse, keep_order=keep_order, time_major=time_major)
    x, h0, rng = _inputs(time_major=time_major)
    h0 = h0 if initial_carry else None
    call = {"seq_lengths": LENGTHS if seq_lengths else None, "return_carry": return_carry}
    r = rng.standard_normal((T, B, H) if time_major else (B, T, H))
    s = rng.standard_normal((B, H))
    g_ref, o_ref = _loss_and_grads(ref, x, h0, r, s, **call)
    g_mine, o_mine = _loss_and_grads(mine, x, h0, r, s, **call)
    assert jax.tree.structure(o_mine) == jax.tree.structure(o_ref)
    assert tree_rel_err(o_mine, o_ref) <= tol(np.float32, "forward")
    assert jax.tree.structure(g_mine) == jax.tree.structure(g_ref)
    assert tree_rel_err(g_mine, g_ref) <= tol(np.float32, "grad")
    # both carry RNG streams advanced alike (once per call that initialised the carry)
    assert _pure(nnx.state(mine, nnx.RngCount)) == _pure(nnx.state(ref, nnx.RngCount))


def test_float64_outputs_and_gradients_equal_nnx_with_a_residual_cell():
    with enable_x64(True):
        ref, mine = _models("tanh", True, jnp.float64, reverse=True, return_carry=True)
        x, h0, rng = _inputs(np.float64)
        r, s = rng.standard_normal((B, T, H)), rng.standard_normal((B, H))
        call = {"seq_lengths": LENGTHS, "return_carry": True}
        g_ref, o_ref = _loss_and_grads(ref, x, h0, r, s, **call)
        g_mine, o_mine = _loss_and_grads(mine, x, h0, r, s, **call)
        assert o_mine[1].dtype == jnp.float64
        assert tree_rel_err(o_mine, o_ref) <= tol(np.float64, "forward")
        assert tree_rel_err(g_mine, g_ref) <= tol(np.float64, "grad")


def test_state_tree_is_nnxs_and_weights_copy_across():
    ref, mine = _models()
    assert jax.tree.map(jnp.shape, _pure(nnx.state(mine, nnx.Param))) == {
        "cell": {"dense_i": {"kernel": (F, H), "bias": (H,)}, "dense_h": {"kernel": (H, H)}}
    }
    s_ref, s_mine = nnx.state(ref), nnx.state(mine)
    assert jax.tree.structure(s_mine) == jax.tree.structure(s_ref)  # rngs included
    p_mine, p_ref = _pure(nnx.state(mine, nnx.Param)), _pure(nnx.state(ref, nnx.Param))
    same_seed = jax.tree.map(jnp.array_equal, p_mine, p_ref)
    assert all(jax.tree.leaves(same_seed))
    # weights of another nnx model copy into jrnn's, and back
    other = nnx.RNN(_cell(seed=7))
    x, h0, _ = _inputs()
    nnx.update(mine, nnx.state(other))
    assert tree_rel_err(mine(x, initial_carry=h0), other(x, initial_carry=h0)) <= 1e-5
    nnx.update(ref, nnx.state(jnnx.SimpleRNN(_cell(seed=8))))
    assert tree_rel_err(ref(x), jnnx.SimpleRNN(_cell(seed=8))(x)) <= 1e-5
    # or the two share one cell
    shared = jnnx.SimpleRNN(other.cell)
    assert shared.cell.dense_i.kernel is other.cell.dense_i.kernel
    # the weights are jrnn's params under nnx's names
    c = mine.cell
    params = jrnn.RNNParams(c.dense_i.kernel[...], c.dense_h.kernel[...], c.dense_i.bias[...])
    assert tree_rel_err(mine(x, initial_carry=h0), jrnn.forward(params, x, h0)[0]) <= 1e-5


def test_gradients_run_jrnns_hand_written_bptt():
    _, mine = _models()
    x, _, _ = _inputs()
    graph, state = nnx.split(mine)
    grad = lambda s: nnx.grad(lambda m: jnp.sum(m(x)))(nnx.merge(graph, s))
    assert "jrnn.bptt" in scopes(grad, state)


def test_more_batch_axes_and_unbatched_input():
    ref, mine = _models(return_carry=True, reverse=True)
    x = jnp.asarray(np.random.default_rng(6).standard_normal((2, 3, T, F)), jnp.float32)
    assert tree_rel_err(nnx.jit(lambda m, x: m(x))(mine, x), ref(x)) <= 1e-5
    assert tree_rel_err(mine(x[0, 0]), ref(x[0, 0])) <= 1e-5


def test_optimizer_steps_update_as_nnxs():
    ref, mine = _models()
    x, _, _ = _inputs()
    y = jnp.sin(jnp.arange(B * T * H, dtype=jnp.float32)).reshape(B, T, H)
    start = _pure(nnx.state(mine, nnx.Param))

    @nnx.jit
    def step(model, optimizer):
        def loss(model):
            return jnp.mean((model(x, seq_lengths=LENGTHS) - y) ** 2)

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    losses = {}
    for name, model in (("nnx", ref), ("jrnn", mine)):
        optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
        losses[name] = [float(step(model, optimizer)) for _ in range(4)]
    assert losses["jrnn"][-1] < losses["jrnn"][0]
    np.testing.assert_allclose(losses["jrnn"], losses["nnx"], rtol=1e-5)
    p_ref, p_mine = _pure(nnx.state(ref, nnx.Param)), _pure(nnx.state(mine, nnx.Param))
    assert tree_rel_err(p_mine, p_ref) <= 1e-5
    assert tree_rel_err(p_mine, start) > 1e-3  # the steps moved the weights


@pytest.mark.parametrize(
    "activation_fn,error,match",
    [
        ("tanh", TypeError, "activation_fn must be callable"),
        (None, TypeError, "activation_fn must be callable"),
    ],
)
def test_unsupported_activations_are_refused(activation_fn, error, match):
    cell = nnx.SimpleCell(F, H, activation_fn=activation_fn, rngs=nnx.Rngs(0))
    with pytest.raises(error, match=match):
        jnnx.SimpleRNN(cell)


def test_own_activation_equals_nnx():
    """nnx.gelu (a callable jrnn has no name for) runs as nnx.RNN runs it: outputs and the
    gradient of a loss (jrnn's BPTT with the derivative from JAX)."""
    ref, mine = _models("gelu")
    x, h0, _ = _inputs()

    def loss(model):
        return jnp.sum(model(x, initial_carry=h0) ** 2)

    assert rel_err(mine(x, initial_carry=h0), ref(x, initial_carry=h0)) <= 1e-6
    g_ref, g_mine = nnx.grad(loss)(ref), nnx.grad(loss)(mine)
    assert (
        tree_rel_err(_pure(nnx.state(g_mine, nnx.Param)), _pure(nnx.state(g_ref, nnx.Param)))
        <= 1e-5
    )


def test_bad_arguments_name_themselves():
    with pytest.raises(TypeError, match=r"cell must be a flax\.nnx\.SimpleCell; got GRUCell"):
        jnnx.SimpleRNN(nnx.GRUCell(F, H, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match=r"rngs must be an nnx\.Rngs or a bool"):
        jnnx.SimpleRNN(_cell(), rngs=3)
    with pytest.raises(ValueError, match="impl must be one of"):
        jnnx.SimpleRNN(_cell(), impl="cuda")
    _, mine = _models()
    x, h0, _ = _inputs()
    with pytest.raises(ValueError, match=r"inputs have 3 features .* \(2, hidden_size\)"):
        mine(jnp.ones((B, T, 3)))
    with pytest.raises(ValueError, match=r"initial_carry must have shape .* \(3, 4\).*got \(4,\)"):
        mine(x, initial_carry=h0[0])
    with pytest.raises(ValueError, match=r"seq_lengths must have the batch shape \(3,\)"):
        mine(x, seq_lengths=np.array([1, 2]))
    with pytest.raises(TypeError, match="return_carry must be a bool"):
        mine(x, return_carry=1)
