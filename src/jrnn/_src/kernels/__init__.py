"""The Pallas kernels of ``impl="pallas"``, one module per backend (as jax's Pallas ops are
laid out), each with its kernels, its kernel call (``recurrence``) and its tiles.

* :mod:`.tpu`: Mosaic TPU; :mod:`.triton`: Triton; :mod:`.mosaic_gpu`: Mosaic GPU
  (Hopper's ``wgmma``);
* :mod:`.common`: what they share: the recurrences, the limits, :class:`.common.Form`,
  the step bodies;
* :mod:`.forms`: the table of forms, and which runs on which platform.

:mod:`jrnn._src.fused` is the one bridge between them and the call model.
"""
