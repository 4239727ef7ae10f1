"""Experiments: everything that opens run folders, trains models (target, shadow, reference,
ensemble), extracts signals or implements a command of ``cli.py``.

It is the only layer that imports every other package: ``datamodules`` (catalogs, manifests),
``lightning_modules`` (models, extraction) and ``attacks`` (pure attack math). See
``docs/architecture.md``.
"""
