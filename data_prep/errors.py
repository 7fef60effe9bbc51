"""Expected bad-input errors: one line naming the file and the problem, never a traceback."""


class InputError(Exception):
    """A problem with one input file or folder; str() is 'PATH: problem'."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
