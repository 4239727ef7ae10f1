"""Membership inference against object detectors (detection paper): padded-vector XGBoost, the
canvas method with CNN attack models, the audit chain and its report."""
