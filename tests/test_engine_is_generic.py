"""The engine knows no vendor: everything vendor-specific lives in mappings/."""

import re
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"
MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"


def vendor_names() -> set[str]:
    names = {"digicert", "nowsecure", "certcentral"}
    names |= {path.stem.lower() for path in MAPPINGS.glob("*.yaml")}
    return names


def test_engine_names_no_vendor():
    pattern = re.compile("|".join(sorted(vendor_names())), re.IGNORECASE)
    offenders = []
    for path in ENGINE.rglob("*"):
        if path.is_file() and path.suffix in {".py", ".json", ".md", ".txt", ".yaml", ".html", ".j2", ".css", ".js"}:
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ENGINE.parent)}:{number}: {line.strip()}")
    assert offenders == []
