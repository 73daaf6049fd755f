"""Experiments: jobs, sweeps and the geometry/representation drivers, short functions over the
library API that leave their record in a run directory (``robustlab.runs``).

Layer: cli -> tasks -> experiments -> runs -> measures -> attacks -> core (pyproject.toml's
import-linter contracts). Modules: ``job`` (train/evaluate a model run, YAML jobs), ``sweeps``
(eps sweeps, Pareto fronts), ``geometry`` (landscape, compare-geometry), ``represent``
(representation analyses of a run)."""
