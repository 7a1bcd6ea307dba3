"""How to mend the path of an input file that does not exist: the fix hint after read_structured's
'<what> file PATH does not exist' (a bare 'does not exist' left the user to guess what was wrong)."""

from __future__ import annotations

import difflib
import itertools
import os
from pathlib import Path

# Entries of the file's folder compared with its name: a bound on the time a huge folder would take.
MAX_SIBLINGS = 10_000
# difflib's ratio a sibling's name must reach to be offered: a slip (case, one letter, .yml for
# .yaml, plan.json for plan-1.json) and not any file that shares an extension.
SIBLING_CUTOFF = 0.75


def missing_file_hint(path: Path) -> str:
    """'; ...' for a file that does not exist at `path`: the folder that is missing too, else the
    file of the folder whose name is closest (did you mean), else where a relative path was looked for."""
    folder = path.parent
    try:
        if not folder.is_dir():
            return f"; folder {folder} does not exist either: check the path"
        names = [entry.name for entry in itertools.islice(os.scandir(folder), MAX_SIBLINGS)]
    except OSError:  # a folder that cannot be listed: no sibling to offer
        names = []
    # Compared lower case (Plan.JSON beside plan.json), offered as spelt in the folder.
    spelt = {name.lower(): name for name in sorted(names, reverse=True)}  # the first of a case pair wins
    close = difflib.get_close_matches(path.name.lower(), list(spelt), n=1, cutoff=SIBLING_CUTOFF)
    if close:
        found = spelt[close[0]]
        return f"; did you mean {folder / found if str(path) != path.name else found}?"
    if not path.is_absolute():
        return f"; check the path (a relative path starts at the current folder, {Path.cwd()})"
    return "; check the path"
