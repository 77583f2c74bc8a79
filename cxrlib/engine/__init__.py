"""The engine tier: the machinery around the training loop that nobody in a notebook needs to open.

The algorithm a student reads is in ``cxrlib.gan`` (the D and G steps, EMA, the plateau rule) and the loop in
``cxrlib.train.Trainer``; the modules here decide *how* it runs fast and safely on a given machine, one job each:

* ``processes``: this process's place in a run (``join_processes``: torchrun rank, device, batch share) and
  what the processes share (``sync_batchnorm``, gradient-averaging ``optimizers``);
* ``batches``: where the training images live (``place_images``, the GPU-data policy of ``device_data_limit``),
  the adaptive learning rate's held-out images (``split_heldout``) and ``HostBatches``, which stages
  host-memory or memory-mapped batches one ahead in pinned memory;
* ``hardware``: the fast paths the hardware offers (``amp_dtype``, ``cuda_has_native_bf16``, fused ``adam``);
* ``rng``: the trainer's own random streams (``seeded_networks``, ``own_generator``, ``with_own_global_rng``;
  ``save_streams`` / ``restore_streams`` for exact resume);
* ``state``: what a checkpoint holds (``state_dict`` / ``load_state_dict``), ``save_checkpoint``, the run
  folder's lock (``claimed``; ``train`` on the command line holds it too) and files (``open_run``), and going on
  from a checkpoint (``resume``, ``finetune``);
* ``checkpoints``: checkpoint files (``load_checkpoint`` with weights-only loading, ``upgrade_checkpoint``,
  atomic ``save_torch``, ``export_pretrained``);
* ``stopping``: ``StopSignals`` (SIGINT/SIGTERM finish the step), the wall-clock cap (``past_deadline``,
  ``WallClockCapWarning``) and the asynchronous NaN guard (``check_finite`` / ``flush_finite``);
* ``logs``: the statistics' running sums on the device (``accumulate``) and the log records (``log``);
* ``families``: ``FAMILIES``, the GAN families by ``TrainConfig.family`` name (each implements the protocol of
  ``cxrlib.gan.family``);
* ``sampling``: drawing from a trainer's generator (``generate``, ``sample``, ``save_samples``,
  ``refresh_ema_norm_stats``) or a checkpoint's (``load_generator``, ``draw_images``, ``write_samples``), ``fixed_batches``;
* ``benchmark``: timing training steps (``time_steps``, behind ``cxrlib.train.throughput``).

The functions that do a ``Trainer``'s work take the trainer as their first argument (``state.save_checkpoint(t)``);
the ``Trainer`` method of the same name is a one-line call of it, so ``cxrlib.train`` keeps the loop a student reads.
Imports go one way: ``cxrlib.train`` imports the engine and ``cxrlib.gan``; the engine imports the families
(``families``, ``sampling``), and through them ``cxrlib.gan``, never ``cxrlib.train``. Every name ``cxrlib.train``
offered before the engine left it is still importable from there.
"""
