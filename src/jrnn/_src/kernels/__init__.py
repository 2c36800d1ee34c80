"""The Pallas kernels of ``impl="pallas"``, one module per form (as jax's Pallas ops are laid out).

* :mod:`.common`: the recurrences, the call description (:class:`.common.Call`,
  :class:`.common.Form`, :class:`.common.Tuning`), the limits and the step bodies;
* :mod:`.tpu`: Mosaic TPU; :mod:`.triton`: Triton; :mod:`.mosaic_gpu`: Mosaic GPU
  (Hopper's ``wgmma``);
* :mod:`.forms`: which form runs on which platform.

:mod:`jrnn._src.fused` is the one bridge between them and the call model.
"""
