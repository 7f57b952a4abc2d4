"""``tts view``: results files as one self-contained HTML page (the run, a problem list that filters and
sorts, and each problem's candidates, votes, search tree and why its answer was chosen).

``explain`` says in words what the page claims about a record (pure functions, tested in Python);
``page`` builds the page's data and writes the file; ``assets/`` holds its script, style and body.
"""

from .page import ViewError, render, write

__all__ = ["ViewError", "render", "write"]
