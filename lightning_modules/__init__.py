"""Models: thin LightningModules around the plain builders of ``components/``, signal
extraction, the model-querying boundary search and DP-SGD. Reaches :mod:`attacks` only through
the signal files (:mod:`attacks.signals`).
"""
