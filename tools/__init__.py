"""Command-line shells over the tempregnet library: train, table1, evaluate_afd, detect, demo, recipes, learning_curve, ..."""
