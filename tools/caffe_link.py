"""Link a built Caffe into the venv: a .pth for pycaffe and a `caffe` wrapper in .venv/bin."""
import os
import stat
import sys
import sysconfig
from pathlib import Path

WRAPPER = """#!/bin/sh
# BVLC Caffe from {prefix}; Python layers run in this venv (made by tools/caffe_link.py).
# Idle OpenMP threads of the CPU layers sleep instead of spinning against OpenBLAS's (patch 0015).
OMP_WAIT_POLICY="${{OMP_WAIT_POLICY:-PASSIVE}}" \
PYTHONPATH="{pythonpath}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{prefix}/bin/caffe" "$@"
"""


def main(prefix: str) -> None:
    prefix = Path(prefix).resolve()
    if not (prefix / "bin" / "caffe").is_file() or not (prefix / "python" / "caffe").is_dir():
        sys.exit(f"caffe_link: {prefix} is not a Caffe install (no bin/caffe or python/caffe)")
    site = Path(sysconfig.get_paths()["purelib"])
    project = Path(__file__).resolve().parent.parent
    (site / "pycaffe.pth").write_text(f"{prefix / 'python'}\n")
    # The caffe binary embeds the base interpreter: it sees the venv only through PYTHONPATH,
    # and PYTHONPATH entries do not process .pth files, so name each directory.
    pythonpath = os.pathsep.join(map(str, (prefix / "python", project, site)))
    wrapper = Path(sys.prefix) / "bin" / "caffe"
    wrapper.write_text(WRAPPER.format(prefix=prefix, pythonpath=pythonpath))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (Path(sys.prefix) / "caffe_prefix").write_text(f"{prefix}\n")


if __name__ == "__main__":
    main(*sys.argv[1:2] or sys.exit("usage: python -m tools.caffe_link PREFIX"))
