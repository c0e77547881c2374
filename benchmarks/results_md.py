"""Replace one section of benchmarks/RESULTS.md (a `##`, `###` or `####` heading and what follows it up to the
next heading of the same or a higher level), leaving the others alone; written atomically. A title the file does
not have yet is appended as a `###` section at the end."""
from __future__ import annotations

import re
from pathlib import Path

from partitioner.core.files import write_text

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEvery figure below comes with the command that produced it.\n"


def update_section(title: str, body: str, path: Path = RESULTS) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    found = re.search(rf"^(#{{2,4}}) {re.escape(title)}\n", text, re.M)
    if found is None:
        write_text(path, text.rstrip("\n") + f"\n\n### {title}\n\n{body.strip()}\n")
        return
    level = len(found.group(1))
    end = re.compile(rf"^#{{2,{level}}} ", re.M).search(text, found.end())
    stop = end.start() if end else len(text)
    block = f"{found.group(1)} {title}\n\n{body.strip()}\n"
    write_text(path, text[:found.start()] + block + ("\n" if end else "") + text[stop:])
