"""Poisoning experiments: poisoned-data runs (``runs``), the ``robustlab poison`` verbs (``cli``: craft,
evaluate, detect, reproduce) and the reproductions of the papers' numbers (``reproduce``)."""
