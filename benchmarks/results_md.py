"""Replace one `## Section` of benchmarks/RESULTS.md, leaving the others alone; written atomically."""
from __future__ import annotations

import re
from pathlib import Path

from partitioner.core.files import write_text

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEvery figure below comes with the command that produced it.\n"


def update_section(title: str, body: str, path: Path = RESULTS) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    block = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: block + "\n", text, count=1) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + block
    write_text(path, text)
