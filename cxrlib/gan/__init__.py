"""The student tier: the algorithm a learner reads, with no engine machinery.

What lives here is written to be read top to bottom: plain functions of explicit arguments (networks,
optimisers, batches, latents, loss, augmentation) that return their statistics. Nothing here knows the
``Trainer``, torchrun, memory maps, checkpoints or RNG bookkeeping; the engine (``cxrlib.train`` and
``cxrlib.engine``) decides *when* each piece runs and with which values, and calls it. Imports go one way: the engine and the families import
``cxrlib.gan``, never the reverse.

* :mod:`cxrlib.gan.steps` -- the D step and the G step of a GAN (:func:`~cxrlib.gan.steps.d_step`,
  :func:`~cxrlib.gan.steps.g_step`).
* :mod:`cxrlib.gan.family` -- what a GAN family gives the engine (:class:`~cxrlib.gan.family.Family`: its
  networks, D step, G step, sample grid and resume state); each family (``cxrlib.unconditional``,
  ``cxrlib.conditional``, ``cxrlib.pix2pix``, ``cxrlib.cyclegan``) is one file that implements it.
* :mod:`cxrlib.gan.ema` -- the EMA generator, an exponential moving average of G's weights
  (:func:`~cxrlib.gan.ema.ema_beta`, :class:`~cxrlib.gan.ema.EMA`).
* :mod:`cxrlib.gan.plateau` -- the reduce-on-plateau rule of the adaptive learning rate
  (:func:`~cxrlib.gan.plateau.plateau_step`).
* :mod:`cxrlib.gan.dp` -- differentially private training of D (DP-SGD: :func:`~cxrlib.gan.dp.dp_d_step`,
  :func:`~cxrlib.gan.dp.clip_and_noise`) and its privacy accountant (:class:`~cxrlib.gan.dp.PrivacyAccount`).
"""

from cxrlib.gan.steps import d_step, g_step  # noqa: F401
