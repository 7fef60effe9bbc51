"""Cine MRI readers, preprocessing into the sequence contract, the HDF5 file, splits, the synthetic cohort, the prepare command."""
