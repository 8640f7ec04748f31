"""The engine: training loop, scoring, run records and the recipe runner.

It connects the data layer (datasets yield waveforms or stored features) with the models (front end,
back end, loss). It imports `utils`, `data` and `models`; the top-level scripts import it.
"""
