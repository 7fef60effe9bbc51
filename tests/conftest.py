"""Test-wide setup: quiet Caffe (glog reads this before pycaffe first loads libcaffe), and an
identity secret of the session's own (data_prep.keys), never the user's ~/.config one."""
import os
import shutil
import tempfile

os.environ.setdefault("GLOG_minloglevel", "2")   # no net dumps in test output; tests that read
                                                 # Caffe's INFO log set their own level

# Set before anything computes a key; subprocesses and Dask workers inherit it. Created on
# first use inside this folder, removed when the session ends.
_SECRET_DIR = tempfile.mkdtemp(prefix="tempregnet-test-secret-")
os.environ["TEMPREG_SECRET_FILE"] = os.path.join(_SECRET_DIR, "identity.key")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SECRET_DIR, ignore_errors=True)
