"""DP-SGD (Opacus) for the suite's LightningModules. Import names from their module:

* :mod:`~lightning_modules.dp.config`: ``DPConfig`` (``model.init_args.dp``), ``as_config``.
* :mod:`~lightning_modules.dp.training`: ``DPTraining`` (the helper a LightningModule owns),
  ``DPHooks`` (the LightningModule mixin), ``fix_module``, ``unwrap``, ``per_sample_loss_mean``.
* :mod:`~lightning_modules.dp.sampling`: Poisson loaders, ``EvenDistributedPoissonSampler`` (DDP).
* :mod:`~lightning_modules.dp.accounting`: ``PrivacyAccountant`` (epsilon), the Yu et al. bound.
* :mod:`~lightning_modules.dp.detection`: detector support check, per-image SSD losses.
"""
