"""jrnn's machinery, behind its public modules (the names here are not an API).

* :mod:`.validate`: the argument checks; :mod:`.options`: the validated call
  (``prepare``: operands and static options);
* :mod:`.scan`: the forward loop and ``jrnn.forward``; :mod:`.bptt`: the adjoint loop and
  ``jrnn.backward``; :mod:`.custom`: the ``custom_vjp`` pattern; :mod:`.rnn`: ``jrnn.rnn``;
  :mod:`.remat`: its segment-wise rematerialisation;
* :mod:`.fused`: ``impl="pallas"``, the bridge to the kernels of :mod:`.kernels`;
* :mod:`.adapters`: what the flax, NNX and equinox modules share.
"""
