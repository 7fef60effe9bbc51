"""Caffe Python layers: the sequence data layer and the temporal structured loss (Eq. 2)."""
