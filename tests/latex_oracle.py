"""The LaTeX converter as it was before #14, kept as the oracle for digest/latex.py.

It was quadratic on unclosed braces (a search to the end of the text from every `{`) but
right on everything people write; tests/test_render.py checks that the linear version
gives the same text on small inputs. Do not fix it: it is the reference.
"""
# ruff: noqa

from __future__ import annotations

import re
import unicodedata

from digest.latex import (
    ACCENTS,
    ALPHABETS,
    DECLARATIONS,
    ESCAPES,
    MATH_ARGUMENT,
    SUBSCRIPTS,
    SUPERSCRIPTS,
    SYMBOLS,
    TEXT_ARGUMENT,
    _SPACING_ACCENT,
)

_NAME = re.compile(r"[A-Za-z]+")
_PLAIN = re.compile(r"[^\\{}$~`'\-^_]+")
_URL = re.compile(r"https?://[^\s{}]+")
_URL_MARK = re.compile("\ue000(\\d+)\ue001")  # private-use brackets: never in arXiv text
_CLOSING = {d: re.compile(r"(?<!\\)" + re.escape(d)) for d in ("$", "$$")}
_SPACES = re.compile(r"  +")
_TRIGGERS = re.compile(r"[\\{}$~`]|''|--")


def to_unicode(text: str) -> str:
    """Readable Unicode for arXiv text with LaTeX; commands without a simple conversion stay."""
    if not _TRIGGERS.search(text):
        return text
    parser = _Parser(text)
    try:
        converted = parser.sequence(math=False)
    except RecursionError:  # hundreds of nested braces: not worth a crash, show the text as is
        return text
    return parser.restore(_SPACES.sub(" ", converted).strip())


def _script(text: str, table: dict[str, str], mark: str) -> str:
    if not text:
        return ""
    if all(c in table for c in text):
        return "".join(table[c] for c in text)
    return mark + text if len(text) == 1 else f"{mark}({text})"


def _accent(base: str, mark: str, accent: str) -> str:
    if not base:
        return _SPACING_ACCENT.get(accent, "")
    first = {"ı": "i", "ȷ": "j"}.get(base[0], base[0])  # í is i + acute, not dotless ı + acute
    return unicodedata.normalize("NFC", first + mark) + base[1:]


class _Parser:
    """A small recursive reader of TeX: groups, math, commands; everything else is text."""

    def __init__(self, text: str) -> None:
        # URLs are set aside first: a `~` or `--` in a link is part of the address.
        self.urls: list[str] = []
        self.s, self.i = _URL.sub(self._hide, text), 0
        self.open_quotes = 0  # `…' pairs: a ' closes one only after a ` opened it

    def _hide(self, match: re.Match[str]) -> str:
        self.urls.append(match.group(0))
        return f"\ue000{len(self.urls) - 1}\ue001"

    def restore(self, text: str) -> str:
        """`text` with the URLs set aside put back."""

        def put_back(mark: re.Match[str]) -> str:
            n = int(mark.group(1))
            return self.urls[n] if n < len(self.urls) else mark.group(0)

        return _URL_MARK.sub(put_back, text)

    def sequence(self, math: bool, until: str = "") -> str:
        out: list[str] = []
        while self.i < len(self.s):
            if until and self.s.startswith(until, self.i):
                self.i += len(until)
                break
            out.append(self.token(math))
        return "".join(out)

    def token(self, math: bool) -> str:
        s, i = self.s, self.i
        if plain := _PLAIN.match(s, i):
            self.i = plain.end()
            return plain.group(0)
        c = s[i]
        self.i += 1
        if c == "\\":
            return self.command(math)
        if c == "{":
            return self.sequence(math, "}")
        if c == "}":
            return ""  # unbalanced: TeX syntax, not text
        if c == "$":
            return self.math("$$" if s.startswith("$", self.i) else "$")
        if c == "~":
            # Between words it is TeX's no-break space ("Fig.~3"); "(~1000" means "about".
            before, after = s[i - 1 : i], s[i + 1 : i + 2]
            joined = bool(before) and (before.isalnum() or before in ").") and after.strip()
            return "\u00a0" if joined else "~"
        if c in "^_" and math:
            table = SUPERSCRIPTS if c == "^" else SUBSCRIPTS
            return _script(self.argument(math), table, c)
        if c == "-":
            return self.dashes(math)
        if c in "`'" and not math:
            return self.quote(c)
        return c

    def math(self, dollars: str) -> str:
        """Math mode up to the closing `dollars`; a `$` that is never closed (a price) stays."""
        start = self.i + len(dollars) - 1
        if not _CLOSING[dollars].search(self.s, start):
            return dollars
        self.i = start
        return self.sequence(math=True, until=dollars)

    def dashes(self, math: bool) -> str:
        if math:
            return "−"
        run = 1
        while self.s.startswith("-", self.i) and run < 3:
            self.i += 1
            run += 1
        return ("-", "–", "—")[run - 1]

    def quote(self, c: str) -> str:
        doubled = self.s.startswith(c, self.i)
        if doubled:
            self.i += 1
            return "“" if c == "`" else "”"
        if c == "`":
            self.open_quotes += 1
            return "‘"
        if self.open_quotes:
            self.open_quotes -= 1
            return "’"
        return "'"

    def argument(self, math: bool) -> str:
        """One argument: a {group}, a command or a single character."""
        while self.s.startswith(" ", self.i):
            self.i += 1
        if self.i >= len(self.s):
            return ""
        if self.s[self.i] == "{":
            self.i += 1
            return self.sequence(math, "}")
        if self.s[self.i] == "\\":
            return self.token(math)
        self.i += 1
        return self.s[self.i - 1]

    def raw_group(self) -> str | None:
        """The verbatim text of a {group} right here, or None when there is none."""
        if not self.s.startswith("{", self.i):
            return None
        depth, j = 0, self.i
        while j < len(self.s):
            depth += {"{": 1, "}": -1}.get(self.s[j], 0)
            if depth == 0:
                text, self.i = self.s[self.i + 1 : j], j + 1
                return text
            j += 1
        return None

    def command(self, math: bool) -> str:
        s, i = self.s, self.i
        if i >= len(s):
            return "\\"
        name_match = _NAME.match(s, i)
        if name_match is None:
            c = s[i]
            self.i += 1
            if c in "([":
                return self.sequence(math=True, until="\\" + ")]"["([".index(c)])
            if c in ACCENTS:
                return _accent(self.argument(math), ACCENTS[c], c)
            return ESCAPES.get(c, "\\" + c)
        name = name_match.group(0)
        self.i = name_match.end()
        if name in SYMBOLS:
            if s.startswith("{}", self.i):
                self.i += 2
            return SYMBOLS[name]
        if name in DECLARATIONS:
            while s.startswith(" ", self.i):
                self.i += 1
            return ""
        if name in TEXT_ARGUMENT:
            return self.argument(math=False)
        if name in MATH_ARGUMENT:
            return self.argument(math)
        if name in ACCENTS:
            return _accent(self.argument(math), ACCENTS[name], name)
        if name in ALPHABETS:
            letters = ALPHABETS[name]
            return "".join(letters.get(c, c) for c in self.argument(math))
        if name in ("textsuperscript", "textsubscript"):
            sup = name == "textsuperscript"
            return _script(self.argument(math), SUPERSCRIPTS if sup else SUBSCRIPTS, "^_"[not sup])
        if name == "url":
            url = self.raw_group()
            return url if url is not None else "\\url"
        if name == "href":
            target, label = self.restore(self.raw_group() or ""), self.argument(math=False)
            return (
                label
                if "://" not in target or target == self.restore(label)
                else f"{label} ({target})"
            )
        if name == "frac":
            top, bottom = self.argument(math), self.argument(math)
            return f"{_grouped(top)}/{_grouped(bottom)}"
        if name == "sqrt":
            return "√" + _grouped(self.argument(math))
        # Unknown: left exactly as written, with the {arguments} that follow it.
        unknown = ["\\", name]
        while (group := self.raw_group()) is not None:
            unknown.append("{" + group + "}")
        return "".join(unknown)


def _grouped(text: str) -> str:
    return text if len(text) <= 1 or text.isalnum() else f"({text})"
