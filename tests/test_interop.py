"""jrnn.interop against the real libraries: PyTorch nn.RNN and Keras 3 SimpleRNN (JAX backend)."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import itertools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rel_err

import jrnn
from jrnn.interop import from_keras, from_torch, to_keras, to_torch

keras = pytest.importorskip("keras")
try:  # not in the test extra (its index build is CUDA's, GBs): README, "Set-up"
    import torch
except ModuleNotFoundError:
    torch = None
needs_torch = pytest.mark.skipif(
    torch is None, reason="torch is not installed (the test extra has none: README, 'Set-up')"
)

TORCH_CASES = [
    c
    for c in itertools.product(
        [1, 2], [False, True], ["tanh", "relu"], [True, False], [True, False]
    )
    if c[3] or c[4]  # bias=False only with batch_first=True, to keep the grid small
]


def _torch_run(module, x, lengths=None):
    """Outputs (batch-first layout of the module), h_n, and grads of a random linear loss."""
    x = x.clone().requires_grad_(True)
    if lengths is None:
        out, h_n = module(x)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.tensor(lengths), batch_first=module.batch_first, enforce_sorted=False
        )
        out, h_n = module(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out,
            batch_first=module.batch_first,
            total_length=x.shape[1 if module.batch_first else 0],
        )
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    s = torch.randn(h_n.shape, generator=gen, dtype=out.dtype)
    ((out * r).sum() + (h_n * s).sum()).backward()
    return out, h_n, x.grad, r, s


def _torch_param_grads(module, layers):
    """Torch's parameter gradients in jrnn's layout and structure."""
    bidirectional = isinstance(layers[0], jrnn.BiRNNParams)
    out = []
    for k in range(len(layers)):
        dirs = []
        for rev in (False, True) if bidirectional else (False,):
            sfx = f"_l{k}" + ("_reverse" if rev else "")
            g = {n: getattr(module, n + sfx).grad for n in ("weight_ih", "weight_hh")}
            b = getattr(module, "bias_ih" + sfx, None)
            db = b.grad.numpy() if b is not None else np.zeros(module.hidden_size)
            dirs.append(jrnn.RNNParams(g["weight_ih"].numpy().T, g["weight_hh"].numpy().T, db))
        out.append(jrnn.BiRNNParams(*dirs) if bidirectional else dirs[0])
    return tuple(out)


def _assert_grads_match(grads, torch_grads, bias, tol):
    def directions(layers):
        return [
            d
            for layer in layers
            for d in (layer if isinstance(layer, jrnn.BiRNNParams) else (layer,))
        ]

    for mine, theirs in zip(directions(grads), directions(torch_grads), strict=True):
        fields = ("w_x", "w_h", "b") if bias else ("w_x", "w_h")  # no bias, no bias gradient
        for f in fields:
            assert rel_err(getattr(mine, f), getattr(theirs, f)) <= tol, f


def _jrnn_run(conv, xs, r, s, lengths=None, bias=True):
    def loss(layers, xs):
        out, finals = jrnn.stack(
            layers, xs, activation=conv.activation, time_major=conv.time_major, lengths=lengths
        )
        h_n = jnp.stack(jax.tree.leaves(finals))
        return jnp.sum(out * r) + jnp.sum(h_n * s), (out, h_n)

    (_, (out, h_n)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(conv.layers, xs)
    return out, h_n, grads


@needs_torch
@pytest.mark.parametrize("num_layers,bidirectional,nonlinearity,bias,batch_first", TORCH_CASES)
def test_torch_outputs_states_and_gradients_float32(
    num_layers, bidirectional, nonlinearity, bias, batch_first
):
    torch.manual_seed(0)
    module = torch.nn.RNN(
        3,
        5,
        num_layers=num_layers,
        bidirectional=bidirectional,
        nonlinearity=nonlinearity,
        bias=bias,
        batch_first=batch_first,
    )
    x = torch.randn((4, 6, 3) if batch_first else (6, 4, 3))
    out_t, h_t, dx_t, r, s = _torch_run(module, x)
    conv = from_torch(module)
    assert conv.activation == nonlinearity and conv.time_major == (not batch_first)
    out, h_n, (grads, dx) = _jrnn_run(conv, jnp.asarray(x.numpy()), r.numpy(), s.numpy())
    assert rel_err(out, out_t.detach().numpy()) <= 1e-5
    assert rel_err(h_n, h_t.detach().numpy()) <= 1e-5
    assert rel_err(dx, dx_t.numpy()) <= 1e-4
    _assert_grads_match(grads, _torch_param_grads(module, conv.layers), bias, 1e-4)


@needs_torch
@pytest.mark.parametrize("bidirectional", [False, True])
def test_torch_float64_and_packed_lengths(x64, bidirectional):
    torch.manual_seed(1)
    module = torch.nn.RNN(
        3, 5, num_layers=2, bidirectional=bidirectional, batch_first=True
    ).double()
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    lengths = [6, 2, 4, 1]
    out_t, h_t, dx_t, r, s = _torch_run(module, x, lengths)
    conv = from_torch(module)
    out, h_n, (grads, dx) = _jrnn_run(
        conv, jnp.asarray(x.numpy()), r.numpy(), s.numpy(), np.array(lengths)
    )
    assert rel_err(out, out_t.detach().numpy()) <= 1e-12
    assert rel_err(h_n, h_t.detach().numpy()) <= 1e-12
    assert rel_err(dx, dx_t.numpy()) <= 1e-10
    _assert_grads_match(grads, _torch_param_grads(module, conv.layers), True, 1e-10)


@needs_torch
@pytest.mark.parametrize("bidirectional", [False, True])
def test_torch_round_trips_are_exact(bidirectional):
    layers = jrnn.init_stack(
        jax.random.PRNGKey(0), 3, 5, 2, bidirectional=bidirectional, bias_init="pytorch"
    )
    back = from_torch(to_torch(layers, activation="relu")).layers
    for a, b in zip(jax.tree.leaves(layers), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    module = torch.nn.RNN(3, 5, num_layers=2, bidirectional=bidirectional)
    again = to_torch(from_torch(module).layers, batch_first=False)
    for k, v in again.state_dict().items():
        if k.startswith("bias_hh"):
            continue  # folded into bias_ih: b = b_ih + b_hh
        if k.startswith("bias_ih"):
            v_ref = module.state_dict()[k] + module.state_dict()[k.replace("ih", "hh")]
        else:
            v_ref = module.state_dict()[k]
        assert torch.equal(v, v_ref), k


@needs_torch
def test_torch_bad_input():
    with pytest.raises(TypeError, match=r"torch.nn.RNN .*got LSTM \(mode LSTM\)"):
        from_torch(torch.nn.LSTM(3, 5))
    with pytest.raises(
        ValueError,
        match=r"weight_hh_l0 must be square \(H, H\) for an nn.RNN; got \(15, 5\) \(3H rows: GRU",
    ):
        from_torch(torch.nn.GRU(3, 5).state_dict())
    sd = torch.nn.RNN(3, 5).state_dict()
    with pytest.raises(ValueError, match=r"missing \['weight_hh_l0'\]"):
        from_torch({k: v for k, v in sd.items() if k != "weight_hh_l0"})
    with pytest.raises(ValueError, match="unexpected key 'extra'"):
        from_torch({**sd, "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"bias_hh_l0 must have shape \(5,\); got \(4,\)"):
        from_torch({**sd, "bias_hh_l0": torch.zeros(4)})
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        from_torch(sd, nonlinearity="sigmoid")
    layer = jrnn.init_params(jax.random.PRNGKey(0), 3, 5)
    with pytest.raises(ValueError, match="supports activation 'tanh' or 'relu'"):
        to_torch(layer, activation="linear")
    with pytest.raises(ValueError, match="bias=False needs every b to be zero"):
        to_torch(layer._replace(b=jnp.ones(5)), bias=False)
    with pytest.raises(TypeError, match="expected an RNNParams"):
        to_torch({"w_x": 1})


@pytest.mark.parametrize("activation,use_bias", [("tanh", True), ("relu", True), ("linear", False)])
def test_keras_simple_rnn_outputs_states_and_gradients(activation, use_bias):
    keras.utils.set_random_seed(0)
    layer = keras.layers.SimpleRNN(
        5,
        activation=activation,
        use_bias=use_bias,
        return_sequences=True,
        return_state=True,
        bias_initializer="random_normal",
    )
    xs = jax.random.normal(jax.random.PRNGKey(1), (4, 6, 3))
    layer.build(xs.shape)
    conv = from_keras(layer)
    assert conv.activation == activation
    out_k, h_k = layer(xs)
    out, h = jrnn.rnn(conv.layers[0], xs, activation=activation)
    assert rel_err(out, out_k) <= 1e-5 and rel_err(h, h_k) <= 1e-5

    r = jax.random.normal(jax.random.PRNGKey(2), out.shape)
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]

    def keras_loss(tv, xs):
        (o, s), _ = layer.stateless_call(tv, ntv, xs)
        return jnp.sum(o * r) + jnp.sum(s**2)

    def jrnn_loss(p, xs):
        o, s = jrnn.rnn(p, xs, activation=activation)
        return jnp.sum(o * r) + jnp.sum(s**2)

    g_k, dx_k = jax.grad(keras_loss, argnums=(0, 1))(tv, xs)
    g_j, dx_j = jax.grad(jrnn_loss, argnums=(0, 1))(conv.layers[0], xs)
    assert rel_err(dx_j, dx_k) <= 1e-4
    for a, b in zip(g_j, g_k, strict=False):  # no bias gradient in Keras when use_bias=False
        assert rel_err(a, b) <= 1e-4


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", "none"])
def test_keras_bidirectional_merge_modes(merge_mode):
    keras.utils.set_random_seed(3)
    layer = keras.layers.Bidirectional(
        keras.layers.SimpleRNN(5, return_sequences=True),
        merge_mode=None if merge_mode == "none" else merge_mode,
    )
    xs = jax.random.normal(jax.random.PRNGKey(4), (2, 7, 3))
    layer.build(xs.shape)
    conv = from_keras(layer)
    assert conv.merge_mode == merge_mode
    out_k = layer(xs)
    out, _ = jrnn.bidirectional(conv.layers[0], xs, merge_mode=merge_mode)
    assert (
        max(
            rel_err(a, b) for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(out_k), strict=True)
        )
        <= 1e-5
    )


def test_keras_round_trips_are_exact():
    bi = jrnn.init_stack(jax.random.PRNGKey(5), 3, 5, bidirectional=True, bias_init="pytorch")[0]
    for params in (bi.forward, bi):
        back = from_keras(to_keras(params, activation="relu", merge_mode="sum"))
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back.layers[0]), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert back.activation == "relu"
    weights = [np.ones((3, 5)), np.eye(5), np.zeros(5)]
    np.testing.assert_array_equal(from_keras(weights).layers[0].w_h, np.eye(5))


def test_keras_bad_input():
    lstm = keras.layers.LSTM(5)
    lstm.build((None, None, 3))
    with pytest.raises(TypeError, match=r"SimpleRNN or Bidirectional.*got LSTM"):
        from_keras(lstm)
    with pytest.raises(
        ValueError,
        match=r"recurrent_kernel must be square \(H, H\) for a SimpleRNN; got \(5, 20\) \(4H columns: LSTM",
    ):
        from_keras(lstm.get_weights())
    with pytest.raises(ValueError, match="got 1 arrays"):
        from_keras([np.ones((3, 5))])
    with pytest.raises(ValueError, match="activation must be one of"):
        to_keras(jrnn.init_params(jax.random.PRNGKey(0), 3, 5), activation="elu")


# --- to_torch: sizes that do not chain, half precision ----------------------------------


@needs_torch
def test_to_torch_refuses_sizes_that_do_not_chain():
    key = jax.random.PRNGKey(6)
    first = jrnn.init_params(key, 3, 5)
    with pytest.raises(
        ValueError,
        match=r"params\[1\] reads 4 input features \(w_x \(4, 5\)\) but layer 0 outputs 5 .*"
        r"layer 1's input size must equal layer 0's output width",
    ):
        to_torch((first, jrnn.init_params(key, 4, 5)))
    summed = jrnn.init_stack(key, 3, 5, 2, bidirectional=True, merge_mode="sum")
    with pytest.raises(
        ValueError,
        match=r"params\[1\].forward reads 5 input features .* layer 0 outputs 10 \(2 x 5",
    ):
        to_torch(summed)  # PyTorch concatenates its directions
    uneven = jrnn.BiRNNParams(first, jrnn.init_params(key, 3, 4))
    with pytest.raises(ValueError, match=r"params\[0\].backward has hidden size 4"):
        to_torch(uneven)
    with pytest.raises(ValueError, match=r"params\[0\].backward reads 2 input features"):
        to_torch(jrnn.BiRNNParams(first, jrnn.init_params(key, 2, 5)))
    ints = jrnn.RNNParams(np.ones((3, 5), int), np.ones((5, 5), int), np.ones(5, int))
    with pytest.raises(TypeError, match="params must hold floating arrays; got int64"):
        to_torch(ints)


@needs_torch
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bfloat16", "float16"])
def test_to_torch_keeps_half_precision(dtype):
    """A half-precision module in the params' own dtype, and an exact round trip."""
    layers = jrnn.init_stack(
        jax.random.PRNGKey(7), 3, 4, 2, bidirectional=True, dtype=dtype, bias_init="pytorch"
    )
    module = to_torch(layers)
    assert module.weight_ih_l1_reverse.dtype == getattr(torch, jnp.dtype(dtype).name)
    back = from_torch(module).layers
    for a, b in zip(jax.tree.leaves(layers), jax.tree.leaves(back), strict=True):
        assert np.asarray(b).dtype == jnp.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    xs = np.asarray(jax.random.normal(jax.random.PRNGKey(8), (2, 5, 3)), np.float32)
    out, _ = module(torch.tensor(xs, dtype=module.weight_ih_l0.dtype))
    wide = jax.tree.map(lambda a: a.astype(jnp.float32), layers)
    ref, _ = jrnn.stack(wide, xs)  # the same weights, run in float32
    assert np.max(np.abs(out.detach().float().numpy() - np.asarray(ref))) <= 3e-2


# --- Keras' backend ----------------------------------------------------------------------

_KERAS_FRESH = """
import os, sys
import jax, numpy as np
import jrnn
from jrnn.interop import from_keras, to_keras
assert "keras" not in sys.modules
params = jrnn.init_params(jax.random.PRNGKey(0), 3, 4)
try:
    layer = to_keras(params)
except RuntimeError as e:
    print("refused:", e)
    assert "KERAS_BACKEND" not in os.environ  # jrnn chose no backend for the user
    raise SystemExit(0)
import keras
assert keras.backend.backend() == "jax", keras.backend.backend()
back = from_keras(layer).layers[0]
assert all(np.array_equal(a, b) for a, b in zip(back, params))
print("ok")
"""


_KERAS_OTHER = """
import keras
from jrnn.interop import from_keras, to_keras
layer = keras.layers.SimpleRNN(4)
layer.build((None, None, 3))
converted = from_keras(layer)  # reading weights needs no particular backend
assert converted.layers[0].w_h.shape == (4, 4)
try:
    to_keras(converted.layers[0])
except RuntimeError as e:
    print("refused:", e)
"""


def _python(code, tmp_path, **env):
    """Runs ``code`` in a fresh interpreter with no KERAS_BACKEND unless given, and with
    a Keras home of its own (holding a keras.json that asks for the torch backend)."""
    (tmp_path / "keras.json").write_text('{"backend": "torch"}')
    environ = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    environ.update(KERAS_HOME=str(tmp_path), JAX_PLATFORMS="cpu", **env)
    return subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=300
    )


@needs_torch
def test_to_keras_imports_keras_on_the_backend_the_user_chose(tmp_path):
    """KERAS_BACKEND=jax: the layer is built on the JAX backend (over a keras.json that names
    another). Unset: jrnn writes no environment; keras.json's torch backend is refused, with
    the one line that says what to set."""
    run = _python(_KERAS_FRESH, tmp_path, KERAS_BACKEND="jax")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "ok"
    run = _python(_KERAS_FRESH, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "refused: keras runs on the 'torch' backend" in run.stdout
    assert "Set KERAS_BACKEND=jax before keras is first imported" in run.stdout


@pytest.mark.parametrize("backend", ["numpy", pytest.param("torch", marks=needs_torch)])
def test_to_keras_refuses_keras_on_another_backend(tmp_path, backend):
    run = _python(_KERAS_OTHER, tmp_path, KERAS_BACKEND=backend)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"refused: keras runs on the {backend!r} backend" in run.stdout
    assert "Set KERAS_BACKEND=jax before keras is first imported" in run.stdout


# Field by field: every field of the source layer is carried, or refused in words.


def test_keras_go_backwards_is_carried():
    keras.utils.set_random_seed(7)
    layer = keras.layers.SimpleRNN(5, go_backwards=True, return_sequences=True, return_state=True)
    xs = jax.random.normal(jax.random.PRNGKey(8), (3, 6, 4))
    layer.build(xs.shape)
    conv = from_keras(layer)
    assert conv.reverse and conv.options()["reverse"] is True
    out_k, h_k = layer(xs)
    out, (h,) = jrnn.stack(conv.layers, xs, **conv.options())
    assert rel_err(h, h_k) <= 1e-5  # the final state (it differed by 1.85 when dropped)
    assert rel_err(out[:, ::-1], out_k) <= 1e-5  # Keras returns them in reading order


def test_keras_dropout_rates_are_carried_and_act_in_training():
    keras.utils.set_random_seed(9)
    layer = keras.layers.SimpleRNN(6, dropout=0.3, recurrent_dropout=0.2, return_sequences=True)
    xs = jax.random.normal(jax.random.PRNGKey(10), (64, 5, 4))
    layer.build(xs.shape)
    conv = from_keras(layer)
    assert (conv.dropout, conv.recurrent_dropout) == (0.3, 0.2)
    options = conv.options()
    assert (options["dropout"], options["recurrent_dropout"]) == (0.3, 0.2)
    # off outside training, as Keras' layer(xs) is: the same outputs
    out, _ = jrnn.stack(conv.layers, xs, **options)
    assert rel_err(out, layer(xs)) <= 1e-5
    trained, _ = jrnn.stack(conv.layers, xs, **options, training=True, key=jax.random.PRNGKey(0))
    assert rel_err(trained, out) > 0.05  # the masks act
    unmasked, _ = jrnn.stack(conv.layers, xs, training=True, key=jax.random.PRNGKey(0))
    assert rel_err(unmasked, out) <= 1e-6


def test_keras_fields_jrnn_cannot_carry_warn():
    layer = keras.layers.SimpleRNN(4, stateful=True, kernel_regularizer="l2")
    layer.build((2, 3, 2))
    with pytest.warns(UserWarning) as caught:
        from_keras(layer)
    said = " ".join(str(w.message) for w in caught)
    assert "stateful=True is not carried" in said and "kernel_regularizer" in said


def test_every_keras_simplernn_field_is_classified():
    """A field Keras adds in a later release is a clear error, never a silent drop."""
    from jrnn._src import keras_config

    layer = keras.layers.SimpleRNN(4)
    layer.build((2, 3, 2))
    known = (
        keras_config.CARRIED_BY_WEIGHTS
        | set(keras_config.CARRIED)
        | set(keras_config.TRAINING_ONLY)
        | {"stateful"}
    )
    assert set(layer.get_config()) <= known

    class Later:  # a SimpleRNN of a future Keras with one more field
        activation = keras.activations.tanh

        def get_weights(self):
            return layer.get_weights()

        def get_config(self):
            return {**layer.get_config(), "time_warp": 2}

    Later.__name__ = "SimpleRNN"
    with pytest.raises(ValueError, match=r"does not know the SimpleRNN field\(s\) \['time_warp'\]"):
        from_keras(Later())


def test_keras_bidirectional_carries_its_layers_fields():
    keras.utils.set_random_seed(11)
    layer = keras.layers.Bidirectional(
        keras.layers.SimpleRNN(5, dropout=0.25, return_sequences=True)
    )
    xs = jax.random.normal(jax.random.PRNGKey(12), (2, 7, 3))
    layer.build(xs.shape)
    conv = from_keras(layer)
    assert conv.dropout == 0.25 and not conv.reverse
    out, _ = jrnn.stack(conv.layers, xs, **conv.options())
    assert rel_err(out, layer(xs)) <= 1e-5


@needs_torch
def test_torch_dropout_between_layers_is_carried():
    torch.manual_seed(0)
    module = torch.nn.RNN(4, 6, num_layers=3, dropout=0.4, batch_first=True)
    conv = from_torch(module)
    assert conv.layer_dropout == 0.4 and conv.options()["layer_dropout"] == 0.4
    x = torch.randn(200, 5, 4)
    xs = jnp.asarray(x.numpy())
    module.eval()
    out, _ = jrnn.stack(conv.layers, xs, **conv.options())
    assert rel_err(out, module(x)[0].detach().numpy()) <= 1e-5  # off outside training
    # in training: each element of layers 0 and 1's outputs dropped with rate 0.4 (the
    # first layer's input and the last layer's output never are), as PyTorch does
    trained, _ = jrnn.stack(
        conv.layers, xs, **conv.options(), training=True, key=jax.random.PRNGKey(1)
    )
    assert rel_err(trained, out) > 0.05
    one = from_torch(torch.nn.RNN(4, 6, num_layers=1, batch_first=True))
    assert one.layer_dropout == 0.0
    h1, _ = jrnn.stack(
        conv.layers[:1], xs, training=True, layer_dropout=0.9, key=jax.random.PRNGKey(1)
    )
    np.testing.assert_array_equal(h1, jrnn.stack(conv.layers[:1], xs)[0])  # one layer: none


@needs_torch
def test_torch_layer_dropout_keeps_a_fraction_and_scales():
    layers = jrnn.init_stack(jax.random.PRNGKey(3), 3, 64, num_layers=2)
    # layer 2 reads layer 1's output; a linear second layer with identity weights shows
    # the mask: the output is the dropped-out input to it
    eye = jrnn.RNNParams(jnp.eye(64), jnp.zeros((64, 64)), jnp.zeros(64))
    xs = jax.random.normal(jax.random.PRNGKey(4), (16, 8, 3))
    out, _ = jrnn.stack(
        (layers[0], eye),
        xs,
        activation="linear",
        layer_dropout=0.25,
        training=True,
        key=jax.random.PRNGKey(5),
    )
    first, _ = jrnn.rnn(layers[0], xs, activation="linear")
    kept = np.asarray(out != 0)
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(np.asarray(out)[kept], np.asarray(first / 0.75)[kept], rtol=1e-5)
