"""Run a project command the way a user does: `python -m MODULE ARGS`, output captured."""
import subprocess
import sys


def run_module(module: str, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    """The finished process of `python -m module args` (glog level from tests/conftest.py)."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
