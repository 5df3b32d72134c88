"""The page's data as it is made: JSON safe inside a <script> element (:func:`script_json`),
written to temporary files (:class:`Spool`) so that it never has to be held in memory."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any


def script_json(data: Any) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' (they are \\u-escaped in strings)."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class Spool:
    """JSON values for the page (escaped for a <script> element), comma-separated in a
    temporary file, so the page's data never has to be held."""

    def __init__(self, scratch: Path | None):
        self.file = tempfile.TemporaryFile(dir=scratch)  # noqa: SIM115 - closed by close()
        self.count = 0

    def add(self, value: Any) -> int:
        """Append ``value``; returns the offset it starts at."""
        offset = self.file.tell()
        self.file.write((b"," if self.count else b"") + script_json(value).encode("ascii"))
        self.count += 1
        return offset

    def cut(self, offset: int, count: int) -> None:
        """Keep the first ``count`` values (those before ``offset``)."""
        self.file.truncate(offset)
        self.file.seek(offset)
        self.count = count

    def copy_to(self, out: IO[bytes]) -> None:
        self.file.seek(0)
        shutil.copyfileobj(self.file, out)
        self.file.seek(0, os.SEEK_END)

    def values(self) -> list:
        self.file.seek(0)
        text = self.file.read()
        self.file.seek(0, os.SEEK_END)
        return json.loads(b"[" + text + b"]")

    def close(self) -> None:
        self.file.close()
