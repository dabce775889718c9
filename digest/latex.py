"""LaTeX in arXiv titles and abstracts as readable Unicode text. Pure; unknown commands stay.

arXiv keeps what authors typed: `$\\mathcal{O}(n^2)$`, `\\"{o}`, `\\textbf{…}`, `--`. Readers
should see `𝒪(n²)`, `ö`, `…` and `–`. Where no simple conversion exists the text is left
as it is, so nothing is lost. The result is plain text: callers escape it for HTML.

Near 420 lines, most of them the tables of commands and symbols; the reader itself is a
small recursive-descent parser. Ours rather than pylatexenc: tests/test_latex_library.py
shows the cases that library gets wrong.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

# Commands that stand for a character or a word (text or math mode).
SYMBOLS: dict[str, str] = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ϵ", "varepsilon": "ε",
    "zeta": "ζ", "eta": "η", "theta": "θ", "vartheta": "ϑ", "iota": "ι", "kappa": "κ",
    "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ", "pi": "π", "varpi": "ϖ", "rho": "ρ",
    "varrho": "ϱ", "sigma": "σ", "varsigma": "ς", "tau": "τ", "upsilon": "υ", "phi": "ϕ",
    "varphi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω", "Gamma": "Γ", "Delta": "Δ",
    "Theta": "Θ", "Lambda": "Λ", "Xi": "Ξ", "Pi": "Π", "Sigma": "Σ", "Upsilon": "Υ", "Phi": "Φ",
    "Psi": "Ψ", "Omega": "Ω",
    "times": "×", "cdot": "·", "pm": "±", "mp": "∓", "div": "÷", "ast": "∗", "star": "⋆",
    "circ": "∘", "bullet": "•", "leq": "≤", "le": "≤", "geq": "≥", "ge": "≥", "neq": "≠",
    "ne": "≠", "approx": "≈", "sim": "∼", "simeq": "≃", "equiv": "≡", "propto": "∝", "ll": "≪",
    "gg": "≫", "in": "∈", "notin": "∉", "subset": "⊂", "subseteq": "⊆", "supset": "⊃",
    "cup": "∪", "cap": "∩", "emptyset": "∅", "varnothing": "∅", "forall": "∀", "exists": "∃",
    "neg": "¬", "land": "∧", "lor": "∨", "wedge": "∧", "vee": "∨", "oplus": "⊕", "otimes": "⊗",
    "infty": "∞", "partial": "∂", "nabla": "∇", "sum": "∑", "prod": "∏", "int": "∫", "ell": "ℓ",
    "hbar": "ℏ", "prime": "′", "to": "→", "rightarrow": "→", "leftarrow": "←", "gets": "←",
    "leftrightarrow": "↔", "Rightarrow": "⇒", "Leftarrow": "⇐", "Leftrightarrow": "⇔",
    "longrightarrow": "⟶", "mapsto": "↦", "uparrow": "↑", "downarrow": "↓", "implies": "⟹",
    "iff": "⟺", "ldots": "…", "dots": "…", "cdots": "⋯", "langle": "⟨", "rangle": "⟩",
    "lfloor": "⌊", "rfloor": "⌋", "lceil": "⌈", "rceil": "⌉", "mid": "|", "vert": "|",
    "textendash": "–", "textemdash": "—", "textbackslash": "\\", "textasciitilde": "~",
    "textdegree": "°", "degree": "°", "S": "§", "P": "¶", "dag": "†", "ddag": "‡",
    "copyright": "©", "textregistered": "®", "texttrademark": "™", "pounds": "£",
    "ss": "ß", "o": "ø", "O": "Ø", "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "aa": "å",
    "AA": "Å", "l": "ł", "L": "Ł", "i": "ı", "j": "ȷ", "LaTeX": "LaTeX", "TeX": "TeX",
    # Macros computer-vision papers define (with xspace) and arXiv shows raw.
    "ie": "i.e.", "eg": "e.g.", "etc": "etc.", "etal": "et al.", "vs": "vs.", "wrt": "w.r.t.",
    "quad": " ", "qquad": " ", "newline": " ", "log": "log", "ln": "ln", "exp": "exp",
    "sin": "sin", "cos": "cos", "tan": "tan", "min": "min", "max": "max", "arg": "arg",
    "lim": "lim", "sup": "sup", "inf": "inf", "det": "det", "dim": "dim",
}  # fmt: skip

# Font and size switches, and sizing of delimiters: they only change the look.
DECLARATIONS = frozenset({
    "bf", "it", "em", "rm", "sf", "tt", "sc", "sl", "up", "md", "itshape", "bfseries",
    "upshape", "normalfont", "small", "large", "Large", "LARGE", "footnotesize", "scriptsize",
    "tiny", "normalsize", "huge", "Huge", "displaystyle", "textstyle", "scriptstyle", "left",
    "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "noindent", "limits",
    "nolimits",
})  # fmt: skip

# Commands whose one argument is the text itself: the markup is dropped, the words kept.
TEXT_ARGUMENT = frozenset({
    "textbf", "textit", "emph", "textsl", "textsc", "texttt", "textrm", "textsf", "textup",
    "textmd", "textnormal", "underline", "uline", "text", "mbox", "hbox",
})  # fmt: skip
MATH_ARGUMENT = frozenset({
    "mathrm", "mathbf", "mathit", "mathsf", "mathtt", "mathnormal", "boldsymbol", "bm",
    "operatorname",
})  # fmt: skip

# Accents, as combining characters put after the (first) letter they apply to.
ACCENTS: dict[str, str] = {
    "'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303", "=": "\u0304",
    ".": "\u0307", "c": "\u0327", "v": "\u030c", "u": "\u0306", "H": "\u030b", "k": "\u0328",
    "r": "\u030a", "d": "\u0323", "b": "\u0331", "hat": "\u0302", "widehat": "\u0302",
    "bar": "\u0304", "overline": "\u0305", "tilde": "\u0303", "widetilde": "\u0303",
    "dot": "\u0307", "ddot": "\u0308", "vec": "\u20d7", "acute": "\u0301", "grave": "\u0300",
    "check": "\u030c", "breve": "\u0306",
}  # fmt: skip
_SPACING_ACCENT = {"'": "´", "`": "`", "^": "^", '"': "¨", "~": "~", "=": "¯", ".": "˙"}

ESCAPES: dict[str, str] = {
    "%": "%", "&": "&", "$": "$", "#": "#", "_": "_", "{": "{", "}": "}", " ": " ", ",": " ",
    ";": " ", ":": " ", "!": "", "-": "", "/": "", "@": "", "\\": " ", "|": "‖",
}  # fmt: skip

# Unicode leaves holes in the mathematical alphabets where older letterlike symbols exist.
_SCRIPT_HOLES = {"B": "ℬ", "E": "ℰ", "F": "ℱ", "H": "ℋ", "I": "ℐ", "L": "ℒ", "M": "ℳ", "R": "ℛ"}
_DOUBLE_HOLES = {"C": "ℂ", "H": "ℍ", "N": "ℕ", "P": "ℙ", "Q": "ℚ", "R": "ℝ", "Z": "ℤ"}
_FRAKTUR_HOLES = {"C": "ℭ", "H": "ℌ", "I": "ℑ", "R": "ℜ", "Z": "ℨ"}
ALPHABETS: dict[str, dict[str, str]] = {
    name: {c: holes.get(c, chr(start + i)) for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ")}
    for name, start, holes in (
        ("mathcal", 0x1D49C, _SCRIPT_HOLES),
        ("mathscr", 0x1D49C, _SCRIPT_HOLES),
        ("mathbb", 0x1D538, _DOUBLE_HOLES),
        ("mathfrak", 0x1D504, _FRAKTUR_HOLES),
    )
}

SUPERSCRIPTS = dict(
    zip(
        "0123456789+-−=()niTabcdefghjklmoprstuvwxyz′*",
        "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁻⁼⁽⁾ⁿⁱᵀᵃᵇᶜᵈᵉᶠᵍʰʲᵏˡᵐᵒᵖʳˢᵗᵘᵛʷˣʸᶻ′*",
        strict=True,
    )
)
SUBSCRIPTS = dict(
    zip("0123456789+-−=()aehijklmnoprstuvx", "₀₁₂₃₄₅₆₇₈₉₊₋₋₌₍₎ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ", strict=True)
)

_SCRIPT_CHARS = {
    id(table): re.compile("[" + re.escape("".join(table)) + "]*")
    for table in (SUPERSCRIPTS, SUBSCRIPTS)
}
_SCRIPT_TABLES = {id(table): str.maketrans(table) for table in (SUPERSCRIPTS, SUBSCRIPTS)}
_ALPHABET_TABLES = {name: str.maketrans(letters) for name, letters in ALPHABETS.items()}

# Titles and abstracts come from strangers (anyone can submit to arXiv, and the answer
# passes through the network), so every regex below runs on untrusted text. None can
# backtrack more than linearly: each is a single character class repeated (`[…]+`,
# `[…]*`, ` +`), a fixed string, or a fixed prefix followed by one such class, and
# nothing after a repeat can match what the repeat matched, so a failed attempt gives
# up at the first character that does not fit. _URL_MARK's `\d+` is bounded by a
# character no digit can be; the markers it looks for are stripped from the input first.
_NAME = re.compile(r"[A-Za-z]+")
_PLAIN = re.compile(r"[^\\{}$~`'\-^_]+")
_URL = re.compile(r"https?://[^\s{}]+")
_URL_MARK = re.compile("\ue000(\\d+)\ue001")  # private-use brackets: stripped from the input
_CLOSING = {d: re.compile(r"(?<!\\)" + re.escape(d)) for d in ("$", "$$")}
_BRACES = re.compile(r"[{}]")
_SPACES = re.compile(r"  +")
_TRIGGERS = re.compile(r"[\\{}$~`]|''|--")

# Deeper nesting than this is not LaTeX a person wrote: the text is shown as it is. The
# cap keeps the recursive reader far from Python's recursion limit (each level costs up
# to six frames) and bounds its work: every level copies at most the whole text once,
# so a text of n characters costs at most MAX_DEPTH * n character copies.
MAX_DEPTH = 40


def to_unicode(text: str) -> str:
    """Readable Unicode for arXiv text with LaTeX; commands without a simple conversion stay."""
    if not _TRIGGERS.search(text):
        return text
    parser = _Parser(text)
    try:
        converted = parser.sequence(math=False)
    except (_TooDeep, RecursionError):  # absurd nesting: not worth a crash, show the text as is
        return text
    return parser.restore(_SPACES.sub(" ", converted).strip())


class _TooDeep(Exception):
    """Nesting deeper than MAX_DEPTH."""


def _script(text: str, table: dict[str, str], mark: str) -> str:
    if not text:
        return ""
    # The regex and translate do in C what a loop per character would do in Python.
    if _SCRIPT_CHARS[id(table)].fullmatch(text):
        return text.translate(_SCRIPT_TABLES[id(table)])
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
        # Markers in the input itself would be taken for ours: they mean nothing to readers.
        text = text.replace("\ue000", "").replace("\ue001", "")
        self.s, self.i = _URL.sub(self._hide, text), 0
        self.open_quotes = 0  # `…' pairs: a ' closes one only after a ` opened it
        self.depth = 0
        # Where each { closes, found in one pass when first needed: looking for it again
        # from every unclosed { made `\x{\x{\x{…` quadratic.
        self._closes: dict[int, int] | None = None
        # The last search for a closing $ or $$: (where it started, where it found one or -1).
        # The reader only moves forward, so a search is reused until the reader passes what
        # it found, and the searches together read the text once.
        self._dollars: dict[str, tuple[int, int]] = {}

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
        # Every recursion of the reader passes through here: { opens sequence, \frac and
        # accents read an argument, $ opens math; all come back through token.
        if self.depth >= MAX_DEPTH:
            raise _TooDeep
        self.depth += 1
        try:
            return self._token(math)
        finally:
            self.depth -= 1

    def _token(self, math: bool) -> str:
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
        if self._closing(dollars, start) < 0:
            return dollars
        self.i = start
        return self.sequence(math=True, until=dollars)

    def _closing(self, dollars: str, start: int) -> int:
        """Where the next unescaped `dollars` at or after start is, or -1."""
        searched, found = self._dollars.get(dollars, (-1, -1))
        if searched < 0 or start < searched or 0 <= found < start:
            match = _CLOSING[dollars].search(self.s, start)
            searched, found = start, match.start() if match else -1
            self._dollars[dollars] = (searched, found)
        return found

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
        if self._closes is None:
            self._closes = _match_braces(self.s)
        j = self._closes.get(self.i)
        if j is None:
            return None
        text, self.i = self.s[self.i + 1 : j], j + 1
        return text

    def command(self, math: bool) -> str:
        """What the command after a backslash reads as; an unknown one stays as written."""
        s, i = self.s, self.i
        if i >= len(s):
            return "\\"
        name_match = _NAME.match(s, i)
        if name_match is None:
            return self.control_symbol(math)
        self.i = name_match.end()
        return self.named(name_match.group(0), math)

    def named(self, name: str, math: bool) -> str:
        """A command with a name of letters, read by the first table that knows it."""
        if name in SYMBOLS:
            if self.s.startswith("{}", self.i):  # `\\ss{}`: the empty group only ends the name
                self.i += 2
            return SYMBOLS[name]
        if name in DECLARATIONS:
            while self.s.startswith(" ", self.i):
                self.i += 1
            return ""
        if name in TEXT_ARGUMENT:
            return self.argument(math=False)
        if name in MATH_ARGUMENT:
            return self.argument(math)
        if name in ACCENTS:
            return _accent(self.argument(math), ACCENTS[name], name)
        if name in ALPHABETS:
            return self.argument(math).translate(_ALPHABET_TABLES[name])
        if (special := _SPECIAL.get(name)) is not None:
            return special(self, math)
        return self.unknown(name)

    def control_symbol(self, math: bool) -> str:
        """A backslash and one non-letter: \\( and \\[ open math, \\' is an accent, \\% a %."""
        c = self.s[self.i]
        self.i += 1
        if c in "([":
            return self.sequence(math=True, until="\\" + ")]"["([".index(c)])
        if c in ACCENTS:
            return _accent(self.argument(math), ACCENTS[c], c)
        return ESCAPES.get(c, "\\" + c)

    def unknown(self, name: str) -> str:
        """An unknown command, left exactly as written with the {arguments} that follow it."""
        unknown = ["\\", name]
        while (group := self.raw_group()) is not None:
            unknown.append("{" + group + "}")
        return "".join(unknown)

    def superscript(self, math: bool) -> str:
        return _script(self.argument(math), SUPERSCRIPTS, "^")

    def subscript(self, math: bool) -> str:
        return _script(self.argument(math), SUBSCRIPTS, "_")

    def url(self, math: bool) -> str:
        url = self.raw_group()
        return url if url is not None else "\\url"

    def href(self, math: bool) -> str:
        """The label, and the target after it when it is a link the label does not show."""
        target, label = self.restore(self.raw_group() or ""), self.argument(math=False)
        if "://" not in target or target == self.restore(label):
            return label
        return f"{label} ({target})"

    def frac(self, math: bool) -> str:
        top, bottom = self.argument(math), self.argument(math)
        return f"{_grouped(top)}/{_grouped(bottom)}"

    def sqrt(self, math: bool) -> str:
        return "√" + _grouped(self.argument(math))


# Commands read by a method of their own (each takes the reader and the math flag).
_SPECIAL: dict[str, Callable[[_Parser, bool], str]] = {
    "textsuperscript": _Parser.superscript,
    "textsubscript": _Parser.subscript,
    "url": _Parser.url,
    "href": _Parser.href,
    "frac": _Parser.frac,
    "sqrt": _Parser.sqrt,
}


def _grouped(text: str) -> str:
    return text if len(text) <= 1 or text.isalnum() else f"({text})"


def _match_braces(text: str) -> dict[int, int]:
    """Each { that closes, mapped to its }: every brace counts, escaped or not, as TeX's
    scanner of a verbatim argument counts them."""
    closes: dict[int, int] = {}
    opened: list[int] = []
    for brace in _BRACES.finditer(text):
        if brace.group() == "{":
            opened.append(brace.start())
        elif opened:
            closes[opened.pop()] = brace.start()
    return closes
