"""The experiment layer both orchestrators (`benchmarks`, `studies`) stand on.

MLflow tracking, compute budgets (profiles), statistics for comparing models and report tables live
here once, so `benchmarks` and `studies` never import each other. It sits above `mcn` and `features`
(profiles name the classical zoo and feature sets) and below the two orchestrators; the libraries
(`mcn.data`, `mcn.models`, `features`) never import it.
"""
