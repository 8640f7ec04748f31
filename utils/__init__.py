"""Ground layer, importing nothing of ours: errors, atomic I/O, recipes, checkpoint files, seeds, distributed
placement, the precision policy, and the evaluator's numpy core (metrics, score files, calibration, reports).

Kept import-free on purpose: the evaluator must not pull in torch through a package import.
"""
