"""The house layout: library apart from entry points, no import-time side effects, one writer, recipes named."""
import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ("tempregnet", "data_prep", "layers", "models")
# module-level statements a library module may hold: definitions, imports, constants, docstring
DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)


def modules(*folders):
    return [p for folder in folders for p in sorted((ROOT / folder).glob("*.py"))]


def imported(path):
    """Every module name path imports, at any depth."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_nothing_imports_a_command_line_module():
    """tools/ holds the command-line shells; the library and the other shells never import one
    (the tests drive a few shells' main(), as a user's command line would)."""
    for path in modules(*LIBRARY, "tools"):
        cli = sorted(n for n in imported(path) if n == "tools" or n.startswith("tools."))
        assert not cli, f"{path.relative_to(ROOT)} imports command-line modules {cli}"


def test_library_modules_only_define_at_import_time():
    """No dlopen flags, environment variables or seeds set when a library module is imported."""
    for path in modules(*LIBRARY):
        for node in ast.parse(path.read_text()).body:
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            main_guard = isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)
            assert isinstance(node, DEFINITIONS) or docstring or main_guard, \
                f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:60]!r} runs at import"


def test_one_atomic_writer():
    """Files are written through tempregnet.outputs; only folder publishing renames elsewhere."""
    for path in modules(*LIBRARY, "tools"):
        if path.name == "outputs.py":
            continue
        text = path.read_text()
        assert "mkstemp" not in text, f"{path.relative_to(ROOT)} has its own atomic writer"


def test_makefile_names_recipes_not_settings():
    make = (ROOT / "Makefile").read_text()
    assert "--set" not in make and "--config" not in make
    for recipe in ("acdc", "cross_sunnybrook"):
        assert f"--recipe {recipe}" in make
    assert re.search(r"--size|--label|--roi \d", make) is None, "contract facts come from the recipes"


def test_every_reported_recipe_has_a_results_row_and_the_makefile_can_ask_it():
    from cli import run_module
    from tempregnet.recipes import REPORTED, recipe_names
    readme = (ROOT / "README.md").read_text()
    for name in REPORTED:
        assert name in recipe_names() and f"| `{name}` |" in readme, name
    res = run_module("tools.recipes", "cross_sunnybrook", "test_data.roi")
    assert res.returncode == 0 and res.stdout.strip() == "0.4"
    res = run_module("tools.recipes", "acdc", "no.such.key")
    assert res.returncode == 1 and "no key" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_paper_zf_rerun_with_the_same_stamp_keeps_the_tables_already_written(tmp_path):
    """`make paper-zf STAMP=<earlier>` after a kill goes on from where it stopped: a table already
    written is kept (tools.table1 refuses to overwrite), only the missing one is computed."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for name in ("requirements.lock", "pyproject.toml"):  # the venv's prerequisites
        (tmp_path / name).touch()

    def table_commands():
        res = subprocess.run(["make", "-n", "paper-zf", "STAMP=s1", "ACDC=acdc"], cwd=tmp_path,
                             capture_output=True, text=True, check=True)
        return [line for line in res.stdout.splitlines() if "tools.table1" in line]

    def written(name):
        (tmp_path / "results" / name).mkdir(parents=True)
        (tmp_path / "results" / name / "table1.md").write_text("a table\n")

    assert len(table_commands()) == 2  # TempReg-Net's four folds, then the full table
    written("paper_zf_cpu-tempreg-s1")
    assert len(table_commands()) == 1
    written("paper_zf_cpu-s1")
    assert table_commands() == []
