"""Offline ML: features, labels, training, evaluation and model bundles (pure numpy, no I/O to
the exchange or database). Never imports `bot`."""
