"""TempReg-Net library: sequence contract, recipes, labels and decoders, inference, evaluation, runs, training; tools/ holds the command-line shells."""
