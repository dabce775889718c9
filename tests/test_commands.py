"""Parsing command mails (digest.commands): pure functions, so plain inputs and outputs."""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.commands import (
    Command,
    automatic,
    body_commands,
    mail_commands,
    parse_line,
    sender_of,
    strip_reply_prefixes,
    subject_commands,
    text_body,
)
from digest.inbox_text import stranger_text


def verbs(commands: list[Command]) -> list[tuple[str, str]]:
    return [(c.verb, c.argument) for c in commands]


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=default).parsebytes(raw)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("subscribe", ("subscribe", "")),
        ("SUBSCRIBE Ann Example", ("subscribe", "Ann Example")),
        ("add Person Re-ID", ("add", "Person Re-ID")),
        ("Add   person   re-id  ", ("add", "person re-id")),
        ('add "Virtual Try-On"', ("add", "Virtual Try-On")),
        ("add “Virtual Try-On”", ("add", "Virtual Try-On")),
        ("del Person Re-ID", ("del", "Person Re-ID")),
        ("DELETE Person Re-ID", ("del", "Person Re-ID")),
        ("remove Person Re-ID", ("del", "Person Re-ID")),
        ("list", ("list", "")),
        ("LIST", ("list", "")),
        ("cancel", ("cancel", "")),
        ("Unsubscribe", ("cancel", "")),
        ("help", ("help", "")),
        ("confirm abc_-1.DEF-_2 trailing words", ("confirm", "abc_-1.DEF-_2")),
    ],
)
def test_commands_in_any_case(line: str, expected: tuple[str, str]) -> None:
    command = parse_line(line)
    assert command is not None and command.error is None
    assert (command.verb, command.argument) == expected


@pytest.mark.parametrize(
    "line",
    [
        "Hello,",
        "Cancel my meeting tomorrow, please",  # bare verbs must stand alone
        "list of things",
        "help me",
        "subscribed",
        "",
        "Thanks!",
    ],
)
def test_prose_is_not_a_command(line: str) -> None:
    assert parse_line(line) is None


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("add", 'name the keyword, e.g. "add Person Re-ID"'),
        ("del", 'name the keyword, e.g. "del Person Re-ID"'),
        ('add say "hi"', "the keyword must not contain double quotes"),
        ("add " + "x" * 201, "the keyword is 201 characters long; the limit is 200"),
        ("confirm", "copy the whole code from the confirmation mail"),
        ("confirm not-a-code", "copy the whole code from the confirmation mail"),
        ("subscribe " + "n" * 101, "a name must be at most 100 characters"),
    ],
)
def test_a_command_with_a_bad_argument_says_why(line: str, error: str) -> None:
    command = parse_line(line)
    assert command is not None and command.error == error


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("list", [("list", "")]),
        ("Re: add Person Re-ID", [("add", "Person Re-ID")]),
        ("RE: Fwd: AW: del Person Re-ID", [("del", "Person Re-ID")]),
        ("Re: confirm abc.def", [("confirm", "abc.def")]),
        ("Re: [digest] please confirm abc.def thanks", [("confirm", "abc.def")]),
        ("Question about the digest", []),
        ("", []),
    ],
)
def test_the_subject(subject: str, expected: list[tuple[str, str]]) -> None:
    assert verbs(subject_commands(subject)) == expected


def test_body_commands_end_at_the_first_line_that_is_not_one() -> None:
    body = "\n\n  add Person Re-ID\nADD Diffusion Models\n\ndel Image Editing\nThanks!\nlist\n"
    assert verbs(body_commands(body)) == [
        ("add", "Person Re-ID"),
        ("add", "Diffusion Models"),
        ("del", "Image Editing"),
    ]


def test_a_body_that_starts_with_prose_has_no_commands() -> None:
    assert body_commands("Hi there,\nadd Person Re-ID\n") == []


def test_quotes_and_attributions_are_skipped_and_signatures_end_the_commands() -> None:
    top = (
        "list\n\nOn Mon, 17 Nov 2025 at 08:00, arXiv digest <\ndigest@example.org> wrote:\n"
        "> cancel\n> add Spam\n"
    )
    assert verbs(body_commands(top)) == [("list", "")]
    bottom = (
        "On Mon, 17 Nov 2025, digest@example.org wrote:\n> confirm quoted.code\n> \n"
        "add Person Re-ID\n-- \ncancel\n"
    )
    assert verbs(body_commands(bottom)) == [("add", "Person Re-ID")]
    german = "Am 17.11.2025 schrieb digest@example.org:\n> x\nlist\n--\nhelp\n"
    assert verbs(body_commands(german)) == [("list", "")]
    outlook = "help\n-----Original Message-----\ncancel\n"
    assert verbs(body_commands(outlook)) == [("help", "")]
    underscores = "list\n________________________________\nFrom: x\ncancel\n"
    assert verbs(body_commands(underscores)) == [("list", "")]


def test_the_first_plain_text_part_is_the_body() -> None:
    message = EmailMessage()
    message["From"] = "a@example.org"
    message.set_content("list\n")
    message.add_alternative("<p>cancel</p>", subtype="html")
    message.add_attachment("cancel\n", filename="notes.txt")
    assert verbs(mail_commands(parse(message.as_bytes()))) == [("list", "")]


def test_an_html_only_mail_has_only_its_subject() -> None:
    message = EmailMessage()
    message["Subject"] = "help"
    message.set_content("<p>cancel</p>", subtype="html")
    assert verbs(mail_commands(parse(message.as_bytes()))) == [("help", "")]


@pytest.mark.parametrize(
    "part",
    [
        b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        b"bGlzdAo=\r\n",
        b'Content-Type: text/plain; charset="iso-8859-1"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nlist\r\nVoil=E0\r\n",
        b'Content-Type: text/plain; charset="x-no-such-charset"\r\n\r\nlist\r\n',
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nbGlzdAo=!!*\r\n",
    ],
)
def test_bodies_are_decoded_whatever_their_encoding(part: bytes) -> None:
    message = parse(b"From: a@example.org\r\nMIME-Version: 1.0\r\n" + part)
    assert verbs(body_commands(text_body(message))) == [("list", "")]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ("Auto-Submitted: auto-replied", "Auto-Submitted: auto-replied"),
        ("Auto-Submitted: auto-generated; type=bounce", "Auto-Submitted: auto-generated"),
        ("Precedence: bulk", "Precedence: bulk"),
        ("Precedence: junk", "Precedence: junk"),
        ("Precedence: list", "Precedence: list"),
        ("Return-Path: <>", "an empty Return-Path (a bounce)"),
        ("X-Autoreply: yes", "it has X-Autoreply"),
        ("X-Autorespond: yes", "it has X-Autorespond"),
        ("List-Id: <papers.lists.example.org>", "it has List-Id"),
        ("X-Auto-Response-Suppress: All", "X-Auto-Response-Suppress: all"),
        ("Content-Type: multipart/report; report-type=delivery-status", "a delivery report"),
    ],
)
def test_machines_are_recognised(headers: str, reason: str) -> None:
    message = parse(f"From: a@example.org\r\nSubject: list\r\n{headers}\r\n\r\n".encode())
    found = automatic(message)
    assert found is not None and found.startswith(reason)


@pytest.mark.parametrize(
    "sender", ["MAILER-DAEMON@mx.example.org", "postmaster@example.org", "digest@example.org"]
)
def test_bounces_and_our_own_mail_are_machines(sender: str) -> None:
    message = parse(f"From: {sender}\r\nSubject: list\r\n\r\n".encode())
    assert automatic(message, {"digest@example.org"}) is not None


def test_people_are_not_machines() -> None:
    message = parse(
        b"From: A <a@example.org>\r\nAuto-Submitted: no\r\nReturn-Path: <a@example.org>\r\n"
        b"Subject: list\r\n\r\n"
    )
    assert automatic(message, {"digest@example.org"}) is None
    assert sender_of(message) == "a@example.org"


@pytest.mark.parametrize(
    "from_header",
    ["", "From: a@example.org, b@example.org\r\n", "From: not an address\r\n", "From: <>\r\n"],
)
def test_no_single_valid_sender(from_header: str) -> None:
    assert sender_of(parse(f"{from_header}Subject: list\r\n\r\n".encode())) is None


@given(st.text())
def test_any_text_parses_without_error(text: str) -> None:
    for command in body_commands(text) + subject_commands(text):
        assert command.verb in {"subscribe", "add", "del", "list", "cancel", "help", "confirm"}


@given(st.binary(max_size=2000))
def test_any_bytes_parse_without_error(raw: bytes) -> None:
    message = parse(b"From: a@example.org\r\nSubject: list\r\n" + raw)
    mail_commands(message)
    automatic(message)
    sender_of(message)


# -- megabytes of adversarial input: the output is asserted; bench/ has the times ----------

MB = 1_000_000


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("re" + " " * MB, []),  # was quadratic: minutes
        ("Re:" + " " * MB + "list", []),  # cut at MAX_SUBJECT: no whole command line
        ("Re: " * 100_000 + "list", []),
        ("Re: " * 400 + "list", [("list", "")]),
        ("re\t\u3000 " * 300 + "x", []),  # CJK ideographic space
        ("Re:   Fwd [3]  :  AW: help", [("help", "")]),
        ("  RE :list", [("list", "")]),
        ("confirm " * 200_000, []),
        ("x" * MB + " confirm a.b", []),  # the code stands beyond the cap
        ("Re: please confirm abc.DEF-_2 " + "\u202e" * MB, [("confirm", "abc.DEF-_2")]),
        ("unsubscribe\x00", []),
        ("unsubscribe abc.def", [("cancel", "abc.def")]),
        ("cancel my meeting", []),
    ],
)
def test_subjects_of_megabytes(subject: str, expected: list[tuple[str, str]]) -> None:
    assert verbs(subject_commands(subject)) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("list\n" * MB, [("list", "")] * 200),  # only the first lines can hold commands
        ("On " + "wrote " * 200_000 + "\nlist", []),  # one long line ends the commands
        ("On " * 300 + "wrote\nlist", []),  # short enough to read, but not an attribution
        ("On " * 100 + "wrote:\nlist", [("list", "")]),
        ("Le 17 nov. 2025, A a écrit :\n> cancel\nlist\n", [("list", "")]),
        ("list\n" + "x" * MB, [("list", "")]),
        ("\n" * MB + "list", []),
        ("-" * MB + "\nlist", []),
        ("list\n" + "-" * MB, [("list", "")]),
        ("help\n\u0645\u0631\u062d\u0628\u0627 王小明\nlist", [("help", "")]),
        ("list\x00\nhelp", []),
        ("\u200f" * MB, []),
    ],
)
def test_bodies_of_megabytes(body: str, expected: list[tuple[str, str]]) -> None:
    assert verbs(body_commands(body)) == expected


def test_a_mail_of_megabytes_holds_only_its_first_commands() -> None:
    message = EmailMessage()
    message["From"] = "reader@example.org"
    message["Subject"] = "re" + " " * 300_000
    message.set_content("list\n" * 300_000 + "王小明 " * 100_000)
    assert verbs(mail_commands(parse(message.as_bytes()))) == [("list", "")] * 200


PIECES = [*"re: \t\r\n>-_.:[]0123456789", "Re:", "Fwd:", "list", "help", "add ", "confirm "]
PIECES += ["On ", " wrote:", "王小明", "Zoë", "\u202e", "\u200f", "\x00", "e\u0301", "🙂", "\u3000"]
# What people send, in pieces: prefixes, verbs, CJK, RTL and bidi controls, NUL, emoji.
PEOPLE = st.lists(st.sampled_from(PIECES), max_size=200).map("".join)


@given(PEOPLE, PEOPLE)
def test_a_strangers_reply_holds_none_of_their_words(subject: str, body: str) -> None:
    commands = subject_commands(subject) + body_commands(body)
    results = [(c, f"not done: {c.error}" if c.error else "done") for c in commands]
    text = stranger_text(results, address="commands@example.org", show_help=True)
    ours = stranger_text([], address="commands@example.org", show_help=True)
    # Only the verbs and our outcomes are added to the fixed text, one line each.
    added = [line for line in text.splitlines() if line not in ours.splitlines()]
    assert len(added) == len(commands)
    for line, (command, outcome) in zip(added, results, strict=True):
        # The verb and our outcome, exactly: a keyword as short as "e" is in "done" too.
        assert line == f"  {command.verb}: {outcome}"


@given(PEOPLE)
def test_reply_prefixes_strip_like_the_old_regex_on_short_subjects(subject: str) -> None:
    old = re.compile(
        r"^\s*(?:(?:re|fwd?|aw|sv|vs|wg|tr|antw|rif)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE
    )
    assert strip_reply_prefixes(subject) == " ".join(old.sub("", subject).split())


# -- pause until DATE, resume (#17) -------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("pause until 2027-01-10", ("pause", "2027-01-10", None)),
        ("PAUSE  Until   2027-01-10", ("pause", "2027-01-10", None)),
        ("resume", ("resume", "", None)),
        ("pause until 2027-13-01", ("pause", "", "write the date as YYYY-MM-DD")),
        ("pause until 10.01.2027", ("pause", "", "write the date as YYYY-MM-DD")),
        ("pause until ２０２７-01-10", ("pause", "", "write the date as YYYY-MM-DD")),
        ("pause until 2027-01-10\x00", ("pause", "", "write the date as YYYY-MM-DD")),
        ("pause until 2027-01-10 please", ("pause", "", "write the date as YYYY-MM-DD")),
        ("pause until " + "9" * 900, ("pause", "", "write the date as YYYY-MM-DD")),
    ],
)
def test_pause_and_resume_lines(line: str, expected: tuple[str, str, str | None]) -> None:
    command = parse_line(line)
    assert command is not None
    verb, argument, error = expected
    assert (command.verb, command.argument) == (verb, argument)
    assert (command.error or "").startswith(error or "") and bool(command.error) == bool(error)


@pytest.mark.parametrize(
    "line",
    [
        "pause",
        "Pause the mails please, I am away",
        "pause for a month",
        "resume tomorrow",
        "pause until 2027-01-10" + " " * 2_000_000,  # past MAX_LINE: not a command at all
        "pause until 🎉" * 100_000,
    ],
)
def test_pause_and_resume_in_prose_are_not_commands(line: str) -> None:
    assert parse_line(line) is None


def test_a_pause_line_ends_nothing_and_a_prose_one_ends_the_commands() -> None:
    found = body_commands("pause until 2027-01-10\nlist\nPause everything please\nresume\n")
    assert [(c.verb, c.argument) for c in found] == [("pause", "2027-01-10"), ("list", "")]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("weekly", ("weekly", "")),
        ("WEEKLY Friday", ("weekly", "friday")),
        ("daily", ("daily", "")),
        ("weekly is too much", None),
        ("weekly fri", None),
        ("daily please", None),
        ("weekly ｆｒｉｄａｙ", None),
        ("weekly friday\u202e", None),
    ],
)
def test_weekly_and_daily_lines(line: str, expected: tuple[str, str] | None) -> None:
    command = parse_line(line)
    assert (None if command is None else (command.verb, command.argument)) == expected
    assert command is None or command.error is None
