"""Cine MRI readers, Eq. 4 labels, preprocessing, the synthetic cohort and the offline HDF5 writer."""
