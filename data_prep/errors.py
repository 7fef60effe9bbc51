"""Expected bad-input errors: one line naming the file and the problem, never a traceback."""
from __future__ import annotations


class Where(str):
    """Where a problem is, for messages ("FILE (slice 3 of the 4D volume)"), remembering the file
    or folder it is part of, so problems of the parts of one file can be told as one."""

    def __new__(cls, text: str, file):
        obj = super().__new__(cls, text)
        obj.file = str(file)
        return obj


class InputError(Exception):
    """A problem with one input file or folder; str() is 'PATH: problem'. `file`: the file or
    folder it belongs to (a Where's file, else the path itself)."""

    def __init__(self, path, problem: str, file=None):
        self.path = str(path)
        self.problem = problem
        self.file = str(file if file is not None else getattr(path, "file", path))
        super().__init__(f"{self.path}: {problem}")

    def as_tuple(self) -> tuple[str, str, str]:
        """(path, problem, file): what crosses a process boundary (exceptions do not pickle)."""
        return self.path, self.problem, self.file


def problem_lines(errors) -> list[str]:
    """One line per file and cause, in the order first met: a cause that several parts of one
    file share (e.g. every slice of a 4D NIfTI) is one line naming the file and how many parts."""
    groups: dict = {}
    for err in errors:
        groups.setdefault((err.file, err.problem), []).append(err)
    lines = []
    for (file, problem), members in groups.items():
        if len(members) == 1:
            lines.append(str(members[0]))
        else:
            parts = len({m.path for m in members})
            lines.append(f"{file}: {problem} ({parts} sequences of this file)" if parts > 1
                         else str(members[0]))
    return lines
