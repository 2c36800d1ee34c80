"""jrnn's machinery, behind its public modules (the names here are not an API).

* :mod:`.validate`: the argument checks; :mod:`.options`: the validated call
  (``prepare``: operands and static options);
* :mod:`.scan`: the forward loop and ``jrnn.forward``; :mod:`.bptt`: the adjoint loop and
  ``jrnn.backward``; :mod:`.custom`: the ``custom_vjp`` pattern; :mod:`.rnn`: ``jrnn.rnn``;
  :mod:`.remat`: its segment-wise rematerialisation;
* :mod:`.fused`: ``impl="pallas"``, the bridge to the kernels of :mod:`.kernels`;
* :mod:`.scopes`: the named scopes a profile shows; :mod:`.compat`: where jrnn meets the
  JAX versions it supports;
* :mod:`.adapters`: what the flax and NNX modules share (the equinox module stands alone);
  :mod:`.keras_config`: a Keras layer's options, read without keras;
* :mod:`.names`: the registries' names, for the program's parser (no jax);
  :mod:`.extras`: the one-line error of a missing extra; :mod:`.interrupts`: the
  program's Ctrl-C.
"""
