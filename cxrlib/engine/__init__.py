"""The engine tier: the machinery around the training loop that nobody in a notebook needs to open.

The algorithm a student reads is in ``cxrlib.gan`` (the D and G steps, EMA, the plateau rule) and the loop in
``cxrlib.train.Trainer``; the modules here decide *how* it runs fast and safely on a given machine, one job each:

* ``processes``: this process's place in a run (``join_processes``: torchrun rank, device, batch share);
* ``batches``: where the training images live (``place_images``, the GPU-data policy of ``device_data_limit``),
  the adaptive learning rate's held-out images (``split_heldout``) and ``HostBatches``, which stages
  host-memory or memory-mapped batches one ahead in pinned memory;
* ``hardware``: the fast paths the hardware offers (``amp_dtype``, ``cuda_has_native_bf16``, fused ``adam``);
* ``rng``: the trainer's own random streams (``with_own_global_rng``; ``save_streams`` / ``restore_streams``
  for exact resume);
* ``checkpoints``: checkpoint files (``load_checkpoint`` with weights-only loading, ``upgrade_checkpoint``,
  atomic ``save_torch``, ``export_pretrained``);
* ``stopping``: ``StopSignals`` (SIGINT/SIGTERM finish the step) and ``WallClockCapWarning``;
* ``families``: ``FAMILIES``, the GAN families by ``TrainConfig.family`` name (each implements the protocol of
  ``cxrlib.gan.family``);
* ``sampling``: drawing from a trained generator (``load_generator``, ``write_samples``, ``fixed_batches``);
* ``benchmark``: timing training steps (``time_steps``, behind ``cxrlib.train.throughput``).

Imports go one way: ``cxrlib.train`` imports the engine and ``cxrlib.gan``; the engine imports the families
(``families``, ``sampling``), and through them ``cxrlib.gan``, never ``cxrlib.train``. Every name here is also
importable from ``cxrlib.train``, as before.
"""
