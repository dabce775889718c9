"""subscribers.toml as TOML: where each table starts, its parts parsed, its values checked.

tomllib parses but does not say where a table is; the Locator does, from one pass over the
file, so every error names a line. A long list of subscribers is read a slice of tables
at a time (load_toml) and the file's text is not kept, so a load's memory stays flat;
bench/README.md has the figures. TableReader checks one table's values, naming its line.
"""

from __future__ import annotations

import bisect
import re
import tomllib
from array import array
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from digest.errors import ConfigError
from digest.validate import CONTROL

BOM = "\ufeff"  # Windows editors start a UTF-8 file with it; tomllib refuses it
_BOM_BYTES = BOM.encode()


class Locator:
    """Where each table of the file starts (tomllib does not say), from one pass over it.

    The file is read a line at a time and its text is not kept: a list of its lines would
    cost several times the file's size while it was read (bench/README.md). Only an error
    message reads it again (`key`).
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(#.*)?$")

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.others: list[int] = []  # the lines of tables other than [[subscriber]]
        self.by_name: dict[str, list[int]] = {}  # their lines by table name
        # Each [[subscriber]] header's line, and where it starts in the file (bytes): a
        # lookup, as a scan per subscriber makes a load quadratic in the subscribers.
        self.subscribers = array("Q")
        self.offsets = array("Q")
        offset = 0
        for number, raw in enumerate(file, start=1):
            line = raw.removeprefix(_BOM_BYTES) if number == 1 else raw
            if line.lstrip(b" \t")[:1] == b"[":  # TOML's whitespace; few lines get further
                match = self._HEADER.match(line.decode("utf-8", "replace"))
                if match:
                    name = re.sub(r"\s*\.\s*", ".", match.group(2)).replace("'", '"')
                    if name == "subscriber" and match.group(1) == "[[":
                        self.subscribers.append(number)
                        self.offsets.append(offset)
                    else:
                        self.others.append(number)
                        self.by_name.setdefault(name, []).append(number)
            offset += len(raw)

    def subscriber_slices(self, size: int) -> list[tuple[int, int]] | None:
        """(start offset, tables) of each run of `size` [[subscriber]] tables, when more
        than `size` of them end the file with no other table among or after them."""
        count = len(self.subscribers)
        if count <= size or (self.others and self.others[-1] > self.subscribers[0]):
            return None
        return [(self.offsets[i], min(size, count - i)) for i in range(0, count, size)]

    def table(self, name: str, index: int = 0) -> int | None:
        found = self.subscribers if name == "subscriber" else self.by_name.get(name, [])
        return found[index] if index < len(found) else None

    def key(self, table_line: int | None, key: str) -> int | None:
        """Line of `key = …` inside the table starting at table_line (None: top level)."""
        return self.keys([table_line], key)[0]

    def keys(self, table_lines: list[int | None], key: str) -> list[int | None]:
        """`key`, for each of several tables, from one more read of the file."""
        self.file.seek(0)
        lines = self.file.read().decode("utf-8", "replace").removeprefix(BOM).split("\n")
        starts = sorted([*self.others, *self.subscribers])
        pattern = re.compile(rf'^\s*("{re.escape(key)}"|{re.escape(key)})\s*=')
        found: list[int | None] = []
        for table_line in table_lines:
            start = table_line or 0
            following = bisect.bisect_right(starts, start)
            end = starts[following] if following < len(starts) else len(lines) + 1
            numbers = range(start + 1, min(end, len(lines) + 1))
            found.append(next((n for n in numbers if pattern.match(lines[n - 1])), table_line))
        return found


class TableReader:
    """Validates one table, remembering where it is for error messages."""

    def __init__(
        self, path: Path, loc: Locator, table: Mapping[str, Any], line: int | None, what: str
    ) -> None:
        self.path, self.loc, self.table, self.line, self.what = path, loc, table, line, what

    def fail(self, key: str | None, message: str) -> ConfigError:
        line = self.loc.key(self.line, key) if key else self.line
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{where}: {self.what}{message}")

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for key in self.table:
            if key not in allowed:
                hint = ", ".join(f"'{k}'" for k in allowed)
                raise self.fail(key, f"unknown key '{key}' (allowed: {hint})")

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.table.get(key, default)
        if value is None:
            if required:
                raise self.fail(None, f"'{key}' is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"'{key}' must be a non-empty string")
        if CONTROL.search(value):
            raise self.fail(key, f"'{key}' must not contain control characters")
        return value.strip()

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"'{key}' must be a whole number from {low} to {high}")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.table.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise self.fail(key, f"'{key}' must be a number from {low:g} to {high:g}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"'{key}' must be true or false")
        return value

    def string_list(self, key: str, *, required: bool) -> list[str]:
        value = self.table.get(key)
        if value is None and not required:
            return []
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v.strip() for v in value)
        ):
            raise self.fail(key, f"'{key}' must be a non-empty list of strings")
        return [v.strip() for v in value]


def open_file(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file; create it (see the example subscribers.toml) "
            "or point DIGEST_SUBSCRIBERS / --subscribers at it"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the file ({e})") from e


def _parse(path: Path, data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        number = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{number}: not UTF-8 text ({e.reason} at byte {e.start}); save the file as UTF-8"
        ) from e
    try:
        return tomllib.loads(text.removeprefix(BOM))
    except tomllib.TOMLDecodeError as e:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        reason = re.sub(r"\s*\(at (line|end of document).*\)$", "", str(e))
        line = match.group(1) if match else len(text.splitlines())  # "at end of document"
        where = f"{path}:{line}"
        raise ConfigError(f"{where}: TOML syntax error: {reason}; fix the file and retry") from e


def load_toml(
    path: Path, file: BinaryIO, size: int
) -> tuple[Locator, dict[str, Any], Iterable[Any]]:
    """The file's document without its [[subscriber]] tables, and those tables.

    The parsed document of many subscribers is many times the file's size while it lasts
    (bench/README.md). When the tables end the file they are read and parsed `size`
    (config.SUBSCRIBER_SLICE) at a time, as they are validated.
    Anything else, and any slice that does not parse to exactly its tables (a
    header-like line inside a multi-line string, a syntax error, bytes that are not
    UTF-8), falls back to parsing the whole file, which reports the error at its line.
    """
    loc = Locator(file)
    slices = loc.subscriber_slices(size)
    if slices:
        file.seek(0)
        try:
            data = tomllib.loads(file.read(slices[0][0]).decode("utf-8").removeprefix(BOM))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            data = {"subscriber": None}  # e.g. cut inside a string: parse it whole
        if "subscriber" not in data:
            return loc, data, _sliced_tables(path, file, slices)
    file.seek(0)
    data = _parse(path, file.read())
    return loc, data, data.get("subscriber", [])


def _sliced_tables(path: Path, file: BinaryIO, slices: list[tuple[int, int]]) -> Iterator[Any]:
    done = 0
    for (start, count), (end, _) in zip(slices, [*slices[1:], (-1, 0)], strict=True):
        file.seek(start)
        try:
            part = tomllib.loads(file.read(end - start if end >= 0 else -1).decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            part = {}
        tables = part.get("subscriber") if part.keys() == {"subscriber"} else None
        if not isinstance(tables, list) or len(tables) != count:
            file.seek(0)
            whole = _parse(path, file.read()).get("subscriber")
            yield from whole[done:] if isinstance(whole, list) else []
            return
        yield from tables
        done += count


def settings_text(path: Path) -> str:
    """The file's text without its [[subscriber]] tables: its settings, for an export."""
    with open_file(path) as file:
        try:
            loc = Locator(file)
            file.seek(0)
            text = file.read().decode("utf-8").removeprefix(BOM)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the file ({e})") from e
    lines = text.splitlines(keepends=True)
    starts = sorted([*loc.others, *loc.subscribers, len(lines) + 1])
    dropped: set[int] = set()
    for first in loc.subscribers:  # a table runs to the line before the next header
        dropped.update(range(first, starts[bisect.bisect_right(starts, first)]))
    return "".join(line for n, line in enumerate(lines, start=1) if n not in dropped)
