"""Test-wide setup: quiet Caffe (glog reads this before pycaffe first loads libcaffe)."""
import os

os.environ.setdefault("GLOG_minloglevel", "2")   # no net dumps in test output; tests that read
                                                 # Caffe's INFO log set their own level
