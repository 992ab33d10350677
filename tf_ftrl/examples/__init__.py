"""Runnable examples of tf_ftrl: `python -m tf_ftrl.examples.ctr` trains a click-through-rate
model on Criteo-format data."""
