"""Why digest/latex.py is ours and not pylatexenc's LatexNodes2Text.

pylatexenc 2.11 agrees with digest on 11 of the 24 cases of test_render.LATEX. Below are
the arXiv texts it reads wrong for a reader of the digest, one per kind of mistake; each
test checks that digest reads it right and pylatexenc does not. When one starts to fail
because pylatexenc reads it right, that reason to keep our own is gone.
Runs where pylatexenc is installed (`pip install pylatexenc==2.11`); digest never needs it.
"""

from __future__ import annotations

import re

import pytest

from digest.latex import to_unicode

WRONG_IN_PYLATEXENC = {
    "superscripts stay as ^2": ("$\\mathcal{O}(n^2)$ time", "𝒪(n²) time"),
    "text superscripts lose their place": ("R\\textsuperscript{3}eVision", "R³eVision"),
    "a lone $ (a price) vanishes": ("costs $5 today", "costs $5 today"),
    "unknown commands vanish with their arguments": (
        "\\reid{} and \\cite{a,b} and \\unknown",
        "\\reid{} and \\cite{a,b} and \\unknown",
    ),
    "the macros vision papers define vanish": (
        "{\\bf PS-ReID}, \\ie tops, \\eg pants",
        "PS-ReID, i.e. tops, e.g. pants",
    ),
    "links are rewritten (~ and -- inside a URL)": (
        "see https://x.org/~me--you now",
        "see https://x.org/~me--you now",
    ),
    "\\url adds brackets and rewrites the link": (
        "\\url{https://github.com/a--b/~c_d}",
        "https://github.com/a--b/~c_d",
    ),
    "\\href with a label that is a link raises IndexError": (
        "\\href{https://x.org}{site}, \\href{url}{https://y.org}",
        "site (https://x.org), https://y.org",
    ),
    "`single quotes' stay as typed": (
        "`\\textit{san si}', StyleGANs' prior",
        "‘san si’, StyleGANs' prior",
    ),
    "~ meaning 'about' becomes a no-break space": ("(~1000 samples)", "(~1000 samples)"),
}


def pylatexenc_reads(text: str) -> str:
    """pylatexenc's text, with runs of spaces squeezed as digest squeezes them."""
    latex2text = pytest.importorskip("pylatexenc.latex2text")
    try:
        converted = latex2text.LatexNodes2Text().latex_to_text(text)
    except Exception as e:  # a crash is a wrong reading too
        return f"{type(e).__name__}: {e}"
    return re.sub(r"  +", " ", converted).strip()


@pytest.mark.parametrize(
    ("text", "readable"), WRONG_IN_PYLATEXENC.values(), ids=WRONG_IN_PYLATEXENC.keys()
)
def test_digest_reads_right_what_pylatexenc_reads_wrong(text: str, readable: str) -> None:
    assert to_unicode(text) == readable
    assert pylatexenc_reads(text) != readable
