"""Command-line entry points: prepare, train, evaluate, detect, reproduce Table 1, demo."""
