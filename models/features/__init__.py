"""Feature engine: one definition, a batch path for training and an incremental path for live."""
