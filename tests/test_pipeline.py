"""The daily pipeline end to end: fake arXiv → SQLite → render → real SMTP server, on loopback."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.config import Config, load_config
from digest.errors import EXIT_DELIVERY_FAILED, EXIT_FETCH_FAILED, EXIT_OK
from digest.progress import Progress
from digest.run import Run, open_store
from digest.store import Store
from tests.conftest import DAY1, SUBSCRIBERS, WriteConfig, run_digest
from tests.fakes.arxiv_server import FakeArxiv
from tests.fakes.smtp_server import SMTPServer
from tests.mailparse import all_ids, sections, text_part

DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY1 + timedelta(days=2)


def received(smtp: SMTPServer) -> dict[str, list[EmailMessage]]:
    return {rcpt: [r.message for r in rs] for rcpt, rs in smtp.by_recipient().items()}


def test_first_run_sends_each_subscriber_a_capped_digest_of_their_keywords(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    config = write_config()
    report = run_digest(config)

    assert report.exit_code == EXIT_OK
    assert report.sent == 3 and not report.failed
    mail = received(smtp)
    assert sorted(mail) == ["lab@example.org", "reader@example.org", "student@example.org"]
    reader = sections(mail["reader@example.org"][0])
    assert list(reader) == ["Person Re-ID", "Virtual Try-On"]
    # A first digest is capped at the newest 10 per keyword, never the 100 old papers.
    assert all(0 < len(ids) <= 10 for ids in reader.values())
    for messages in mail.values():
        assert len(messages) == 1
        ids = all_ids(messages[0])
        assert len(ids) == len(set(ids)), "a paper appears once per digest"
    # One arXiv request per watched keyword, one client, the real query parameters.
    assert len(arxiv_fake.requests) == len(config.keywords) == 4
    queries = [r.params for r in arxiv_fake.requests]
    assert {q["search_query"] for q in queries} >= {'ti:"Person Re-ID" OR abs:"Person Re-ID"'}
    assert all(q["sortBy"] == "submittedDate" and q["sortOrder"] == "descending" for q in queries)
    assert all(q["max_results"] == "100" and q["start"] == "0" for q in queries)
    assert all(r.headers["User-Agent"].startswith("digest/") for r in arxiv_fake.requests)


def test_newest_papers_first_within_a_keyword(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    run_digest(write_config())
    ids = sections(received(smtp)["reader@example.org"][0])["Person Re-ID"]
    published = [arxiv_fake.get(i).published for i in ids]
    assert published == sorted(published, reverse=True)


def test_next_day_sends_only_new_papers_only_to_their_watchers(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    config = write_config()
    run_digest(config)
    smtp.reset()
    reid = arxiv_fake.add_paper(
        "A new Person Re-ID benchmark", "We study person re-id.", "Person Re-ID"
    )
    tryon = arxiv_fake.add_paper(
        "Faster Virtual Try-On", "A virtual try-on model.", "Virtual Try-On"
    )

    report = run_digest(config, DAY2)

    assert report.exit_code == EXIT_OK
    mail = received(smtp)
    assert sorted(mail) == ["lab@example.org", "reader@example.org", "student@example.org"]
    assert sections(mail["reader@example.org"][0]) == {
        "Person Re-ID": [reid.arxiv_id],
        "Virtual Try-On": [tryon.arxiv_id],
    }
    assert sections(mail["lab@example.org"][0]) == {"Person Re-ID": [reid.arxiv_id]}
    assert all_ids(mail["student@example.org"][0]) == [tryon.arxiv_id]
    assert (
        "Person Re-ID (1), Virtual Try-On (1): 2 new papers · "
        in mail["reader@example.org"][0]["Subject"]
    )

    # Nothing new on the third day: no mail at all (arXiv announces nothing on weekends).
    smtp.reset()
    report = run_digest(config, DAY3)
    assert report.exit_code == EXIT_OK and report.sent == 0
    assert smtp.messages == []


def test_a_paper_under_two_keywords_appears_once_under_the_first_marked_with_the_other(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    config = write_config()
    run_digest(config)
    smtp.reset()
    both = arxiv_fake.add_paper(
        "Virtual Try-On meets Person Re-ID", "Person Re-ID under virtual try-on.", "Person Re-ID"
    )

    run_digest(config, DAY2)

    message = received(smtp)["reader@example.org"][0]
    assert sections(message) == {"Person Re-ID": [both.arxiv_id]}
    assert "also: Virtual Try-On" in text_part(message)
    # The student watches only the other keyword: they get it there.
    assert sections(received(smtp)["student@example.org"][0]) == {"Virtual Try-On": [both.arxiv_id]}


def test_a_new_version_of_a_seen_paper_is_not_a_new_paper(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    config = write_config()
    run_digest(config)
    sent = all_ids(received(smtp)["reader@example.org"][0])
    smtp.reset()
    old = arxiv_fake.get(sent[0])
    arxiv_fake.replace_version(old.arxiv_id, old.version + 1, old.updated + timedelta(days=30))

    report = run_digest(config, DAY2)

    assert report.sent == 0 and smtp.messages == []


def test_a_failed_delivery_is_carried_to_the_next_digest(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    config = write_config()
    smtp.rcpt_reply["student@example.org"] = "451 4.3.0 Mailbox temporarily unavailable"

    report = run_digest(config)

    assert report.exit_code == EXIT_DELIVERY_FAILED
    assert [e for e, _ in report.failed] == ["student@example.org"]
    assert "451" in report.failed[0][1]
    assert sorted(received(smtp)) == ["lab@example.org", "reader@example.org"]
    # The reader watches Virtual Try-On too, so their day-one section is what the student missed.
    missed = sections(received(smtp)["reader@example.org"][0])["Virtual Try-On"]
    smtp.reset()
    new = arxiv_fake.add_paper("Try-on at scale", "Virtual try-on, faster.", "Virtual Try-On")

    report = run_digest(config, DAY2)

    assert report.exit_code == EXIT_OK
    student = set(all_ids(received(smtp)["student@example.org"][0]))
    assert {new.arxiv_id, *missed} <= student
    reader_ids = set(all_ids(received(smtp)["reader@example.org"][0]))
    assert reader_ids == {new.arxiv_id}, "who got day one's digest is not sent it again"


def test_a_new_subscriber_gets_a_capped_first_digest_while_others_get_only_news(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    run_digest(write_config())
    smtp.reset()
    newcomer = '[[subscriber]]\nemail = "new@example.org"\nkeywords = ["person re-id"]\n'
    config = write_config(subscribers=SUBSCRIBERS + newcomer)

    run_digest(config, DAY2)

    mail = received(smtp)
    assert sorted(mail) == ["new@example.org"]
    # Keywords match case-insensitively: the newcomer shares the existing "Person Re-ID",
    # shown as they wrote it.
    assert {k: len(v) for k, v in sections(mail["new@example.org"][0]).items()} == {
        "person re-id": 10
    }
    assert len(arxiv_fake.requests) == 8, "still one request per keyword per run"


def test_send_empty_mails_subscribers_with_nothing_new(
    write_config: WriteConfig, smtp: SMTPServer
) -> None:
    config = write_config(digest="send_empty = true")
    run_digest(config)
    smtp.reset()

    report = run_digest(config, DAY2)

    assert report.sent == 3
    message = received(smtp)["reader@example.org"][0]
    assert "No new papers" in message["Subject"]
    assert "No new papers today" in text_part(message)


def test_a_keyword_arxiv_fails_on_is_skipped_and_arrives_next_run(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    config = write_config()
    # Keywords are fetched in the order subscribers name them: Person Re-ID first, 3 attempts.
    arxiv_fake.fail_next("status", times=3, status=500)

    report = run_digest(config)

    assert report.exit_code == EXIT_FETCH_FAILED
    [(failed, reason)] = report.failed_keywords
    assert failed == "Person Re-ID" and "HTTP 500" in reason
    assert report.sent == 3, "the other keywords' digests still go out"
    for messages in received(smtp).values():
        assert failed not in sections(messages[0])
    smtp.reset()

    report = run_digest(config, DAY2)

    assert report.exit_code == EXIT_OK
    got = [m for ms in received(smtp).values() for m in ms if failed in sections(m)]
    assert got, "the failed keyword's papers come with the next successful run"
    assert all(len(sections(m)[failed]) <= 10 for m in got), "as a capped first digest, not a flood"


def test_dry_run_sends_nothing_writes_nothing_and_is_repeatable(
    write_config: WriteConfig,
    arxiv_fake: FakeArxiv,
    smtp: SMTPServer,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    config = write_config()
    run_digest(config)
    smtp.reset()
    arxiv_fake.add_paper("A new Person Re-ID benchmark", "Person re-id again.", "Person Re-ID")
    db = Path(env["DIGEST_DB"])
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    beside = sorted(db.parent.iterdir())
    runner = CliRunner()

    first = runner.invoke(main, ["send", "--dry-run", "--out", str(tmp_path / "out")], env=env)
    second = runner.invoke(main, ["send", "--dry-run"], env=env)

    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[:3] == second.stdout.splitlines()[:3]
    assert "lab@example.org: 1 papers: Person Re-ID 1" in first.stdout
    assert "reader@example.org: 1 papers: Person Re-ID 1" in first.stdout
    assert "student@example.org" not in first.stdout
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    left = sorted(p for p in db.parent.iterdir() if p.name != "out")
    assert left == beside, "the copy it worked on is gone, and SQLite left no -wal or -shm"
    assert smtp.messages == [] and smtp.connections == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [
        "lab@example.org.eml",
        "lab@example.org.html",
        "reader@example.org.eml",
        "reader@example.org.html",
    ]
    blocked = runner.invoke(main, ["send", "--dry-run", "--out", str(db / "out")], env=env)
    assert (blocked.exit_code, blocked.stderr.splitlines()[-1]) == (
        2,
        f"Error: {db / 'out'}: cannot write the digests there (Not a directory); "
        "give --out a folder you can write to",
    )
    # The real run afterwards still has that paper to send: the dry run marked nothing seen.
    assert run_digest(config, DAY2).sent == 2


def test_headers_and_both_mime_parts(write_config: WriteConfig, smtp: SMTPServer) -> None:
    run_digest(write_config())
    [raw] = smtp.by_recipient()["reader@example.org"]
    message = raw.message

    assert raw.mail_from == "digest@example.org" and raw.rcpt_tos == ["reader@example.org"]
    assert message["From"] == "arXiv digest <digest@example.org>"
    assert message["To"] == '"A. Reader" <reader@example.org>'
    assert message["Date"] and message["Message-ID"].endswith("@example.org>")
    assert re.fullmatch(
        r"Person Re-ID \(\d+\), Virtual Try-On \(\d+\): \d+ new papers · 2025-11-17",
        message["Subject"],
    )
    assert message["List-Id"] == "arXiv digest <digest.digest.example.org>"
    assert message["List-Unsubscribe"] == "<mailto:digest@example.org?subject=unsubscribe>"
    assert message.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    html = message.get_body(preferencelist=("html",)).get_content()
    assert 'style="' in html, "CSS is inlined"
    assert "https://arxiv.org/abs/" in html and "https://arxiv.org/pdf/" in html
    # Why each paper is there: its keyword marked where it matched, as delivered.
    assert re.search(r"<mark [^>]*>(?i:person re-id)</mark>", html)
    assert re.search(r"<mark [^>]*>(?i:virtual try-on)</mark>", html)
    assert "you watch: Person Re-ID, Virtual Try-On" in text_part(message)
    # No line of the raw message exceeds SMTP's limit, and every header stays one header.
    assert max(len(line) for line in raw.data.split(b"\r\n")) <= 998
    assert b"\r\n\r\n" in raw.data
    # Every line ends in CRLF, so the SIZE declared (the length of our bytes) is exact.
    assert (
        re.sub(b"\r\n", b"", raw.data).count(b"\n")
        == raw.data.count(b"\r") - raw.data.count(b"\r\n")
        == 0
    )
    assert raw.mail_options == (f"SIZE={len(raw.data)}",)


def test_titles_with_line_breaks_and_markup_cannot_inject_headers_or_html(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    config = write_config()
    run_digest(config)
    smtp.reset()
    arxiv_fake.add_paper(
        "Person Re-ID <script>alert(1)</script>\r\nBcc: victim@example.com",
        "An abstract with <b>markup</b> and a\nline break.",
        "Person Re-ID",
    )

    run_digest(config, DAY2)

    [raw] = smtp.by_recipient()["lab@example.org"]
    assert raw.message["Bcc"] is None and raw.rcpt_tos == ["lab@example.org"]
    html = raw.message.get_body(preferencelist=("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;b&gt;markup&lt;/b&gt;" in html


def test_premailer_runs_once_per_distinct_content(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    twins = "".join(
        f'\n[[subscriber]]\nemail = "twin{i}@example.org"\nkeywords = ["Person Re-ID", "Virtual Try-On"]\n'
        for i in range(5)
    )
    config = write_config(subscribers=twins)

    report = run_digest(config)

    assert report.sent == 5 and report.inlinings == 1
    bodies = {r.message.get_body(preferencelist=("html",)).get_content() for r in smtp.messages}
    assert len(bodies) == 1


def test_progress_and_summary_through_the_cli(
    write_config: WriteConfig, smtp: SMTPServer, env: dict[str, str]
) -> None:
    write_config()
    result = CliRunner().invoke(main, ["send"], env=env)

    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d: sent 3 digests, 0 failed; \d+ papers fetched, \d+ new\n", result.stdout
    )
    assert "INFO sent 3 of 3 digests" in result.stderr


def test_a_category_filter_reaches_arxiv_as_a_query(
    write_config: WriteConfig, arxiv_fake: FakeArxiv
) -> None:
    config = write_config(
        subscribers='[keywords."low level vision"]\ncategories = ["cs.CV", "eess.IV"]\n'
        '[[subscriber]]\nemail = "a@example.org"\nkeywords = ["low level vision"]\n'
    )
    run_digest(config, dry_run=True)
    [request] = arxiv_fake.requests
    assert request.params["search_query"] == (
        '(ti:"low level vision" OR abs:"low level vision") AND (cat:cs.CV OR cat:eess.IV)'
    )


def test_sending_processes_send_what_one_process_sends(
    write_config: WriteConfig, smtp: SMTPServer, env: dict[str, str], tmp_path: Path
) -> None:
    keywords = ["Person Re-ID", "Virtual Try-On", "low level vision"]
    orders = [p for n in (1, 2, 3) for p in itertools.permutations(keywords, n)]  # 15 contents
    subscribers = "".join(
        f'[[subscriber]]\nemail = "r{i}-{j}@example.org"\nkeywords = {json.dumps(list(p))}\n\n'
        for i, p in enumerate(orders)
        for j in range(3)
    )
    received = []
    for processes, db in ((3, "shared.db"), (1, "single.db")):
        write_config(subscribers=subscribers, smtp=f"connections = 3\nprocesses = {processes}")
        config = load_config(env={**env, "DIGEST_DB": str(tmp_path / db)})
        store = open_store(config, dry_run=False)
        try:
            run = Run(config, store, now=DAY1, progress=Progress(tty=False))
            report = run.execute()
            assert (report.sent, report.failed, run.processes) == (45, [], processes)
            assert run.built == 15, "each content built once"
            assert 1 <= report.inlinings <= processes, "the template inlined once per process"
            assert store.pending_count() == 0
        finally:
            store.close()
        received.append(
            {
                r.rcpt_tos[0]: (
                    r.message["Subject"],
                    text_part(r.message),
                    r.message.get_body(preferencelist=("html",)).get_content(),
                )
                for r in smtp.messages
            }
        )
        assert len(smtp.messages) == 45 and len({r.session_id for r in smtp.messages}) >= 3
        smtp.reset()
    assert received[0] == received[1]


def test_the_outbox_forgets_digests_done_more_than_keep_days_ago(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    """At 100,000 subscribers every day adds ~64 MB of finished digests: they go after
    [digest] keep_days. A pending digest is never removed, however old."""

    def planned_on(config: Config) -> list[tuple[str, str]]:
        store = Store.open(config.db_path)
        try:
            rows = store.db.execute("SELECT substr(created, 1, 10), status FROM digests")
            return sorted(rows.fetchall())
        finally:
            store.close()

    config = write_config(digest="keep_days = 2")
    smtp.rcpt_reply["student@example.org"] = "550 5.1.1 User unknown"
    run_digest(config)
    smtp.rcpt_reply.clear()
    arxiv_fake.add_paper("Try-on at scale", "Virtual try-on, faster.", "Virtual Try-On")
    run_digest(config, DAY2)
    day1, day2 = DAY1.date().isoformat(), DAY2.date().isoformat()
    assert planned_on(config) == [
        (day1, "failed"),
        (day1, "sent"),
        (day1, "sent"),
        (day2, "sent"),
        (day2, "sent"),
    ]

    arxiv_fake.add_paper("Re-ID at night", "Person re-ID in the dark.", "Person Re-ID")
    run_digest(config, DAY1 + timedelta(days=3))
    assert [day for day, _ in planned_on(config)] == [day2, day2, "2025-11-20", "2025-11-20"]

    smtp.stop()
    run_digest(config, DAY1 + timedelta(days=4))  # nothing new: nothing planned or pending
    arxiv_fake.add_paper("Try-on in the wild", "Virtual try-on outdoors.", "Virtual Try-On")
    run_digest(config, DAY1 + timedelta(days=30))
    run_digest(config, DAY1 + timedelta(days=40))  # the server still down
    assert planned_on(config) == [("2025-12-17", "pending"), ("2025-12-17", "pending")]


@pytest.mark.parametrize("content_length", [True, False], ids=["declared", "undeclared"])
def test_an_answer_over_the_size_cap_fails_its_keyword_and_the_others_go_out(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer, content_length: bool
) -> None:
    config = write_config()
    # 30 MB of well-formed Atom, 3 times: every attempt of the first keyword, Person Re-ID.
    arxiv_fake.fail_next("huge", times=3, content_length=content_length)

    report = run_digest(config)

    assert report.exit_code == EXIT_FETCH_FAILED
    [(failed, reason)] = report.failed_keywords
    assert failed == "Person Re-ID"
    assert "the answer is larger than 20 MB" in reason
    assert report.sent == 3, "the other keywords' digests still go out"
    for messages in received(smtp).values():
        assert failed not in sections(messages[0])
    smtp.reset()

    run_digest(config, DAY2)

    got = [m for ms in received(smtp).values() for m in ms if failed in sections(m)]
    assert len(got) == 2, "nothing was marked seen: both watchers get the keyword next run"


MB = 1_000_000
HOSTILE_TITLES = {
    "unclosed braces": "{" * MB + " Braces",
    "unclosed fractions": "$\\frac{" * (MB // 7) + " Fractions",
    "unknown commands": "\\x{" * (MB // 3) + " Unknown",
    "a megabyte of words": "Word " * (MB // 5),
    "controls and bidi": "NUL\x00 C1\x85\x9b bidi\u202eevil\u202c \u2066iso\u2069 CR\r\nLF 数据 😀",
}


def test_papers_with_hostile_fields_are_delivered_in_a_bounded_digest(
    write_config: WriteConfig, arxiv_fake: FakeArxiv, smtp: SMTPServer
) -> None:
    config = write_config()
    added = [
        arxiv_fake.add_paper(
            title,
            summary=title if n % 2 else "\\mathcal{" * (MB // 9),
            keyword_section="Person Re-ID",
            authors=[f"Author {i} \u202e{name}" for i in range(10_000)] if n == 0 else None,
        )
        for n, (name, title) in enumerate(HOSTILE_TITLES.items())
    ]
    added.append(
        arxiv_fake.add_paper(
            "A megabyte author", "Abstract.", "Person Re-ID", authors=["Long " * (MB // 5), "B"]
        )
    )

    report = run_digest(config)

    assert report.exit_code == EXIT_OK and report.sent == 3
    for email in ("reader@example.org", "lab@example.org"):
        [record] = smtp.by_recipient()[email]
        reid = sections(record.message)["Person Re-ID"]
        assert {e.arxiv_id for e in added} <= set(reid), "every hostile paper is delivered"
        assert len(record.data) < 300_000, "a digest's size stays bounded"
        text = text_part(record.message)
        assert "\x00" not in text and "\u202e" not in text


def test_log_lines_count_what_happened_in_the_right_number(
    write_config: WriteConfig, smtp: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """One refusal out of three: 2 sent, not 3; a limit of 1 is "1 permanent failure";
    a second run with nothing new planned no content."""
    config = write_config(digest="bounce_limit = 1")
    smtp.rcpt_reply["student@example.org"] = "550 5.1.1 User unknown"
    with caplog.at_level("INFO"):
        run_digest(config)
        first = [r.getMessage() for r in caplog.records]
        caplog.clear()
        run_digest(config, DAY1 + timedelta(hours=1))
        second = [r.getMessage() for r in caplog.records]

    assert "sent 2 of 3 digests, 1 not delivered" in first
    assert "planned 3 digests (3 distinct contents)" in first
    assert (
        "student@example.org: 1 permanent failure in a row; "
        "paused until `digest reenable student@example.org`"
    ) in first
    assert any(re.search(r"\b1 sending process$", line) for line in first)
    assert "planned 0 digests (0 distinct contents)" in second


SPELLINGS = """
[keywords."low level vision"]

[[subscriber]]
email = "reader@example.org"
keywords = ["Low Level Vision", "Person Re-ID"]

[[subscriber]]
email = "lab@example.org"
keywords = ["low level vision", "Person Re-ID"]

[[subscriber]]
email = "fan@example.org"
keywords = ["LOW  level vision", "PERSON re-ID"]
"""


@pytest.mark.parametrize("processes", [1, 2])
def test_each_reader_sees_the_keywords_as_they_wrote_them(
    write_config: WriteConfig, smtp: SMTPServer, env: dict[str, str], processes: int
) -> None:
    """The same papers in three digests, each under its reader's spelling (subject,
    sections, table of contents, footer), whatever the table or another reader wrote."""
    config = write_config(subscribers=SPELLINGS, smtp=f"connections = 2\nprocesses = {processes}")
    store = open_store(config, dry_run=False)
    try:
        run = Run(config, store, now=DAY1, progress=Progress(tty=False))
        report = run.execute()
        assert (report.sent, run.processes, run.built) == (3, processes, 3)
    finally:
        store.close()

    got = received(smtp)
    spelled = {
        "reader@example.org": ["Low Level Vision", "Person Re-ID"],
        "lab@example.org": ["low level vision", "Person Re-ID"],
        "fan@example.org": ["LOW level vision", "PERSON re-ID"],
    }
    papers = set()
    for email, names in spelled.items():
        [message] = got[email]
        assert list(sections(message)) == names
        papers.add(tuple(all_ids(message)))
        html = message.get_body(preferencelist=("html",)).get_content()
        assert f"You get this digest because you watch: {', '.join(names)}." in text_part(message)
        assert names[0] in message["Subject"]
        for name in names:  # paper titles may say "Person Re-ID": count the places
            assert html.count(name) >= 2, "the table of contents and a section"
    assert len(papers) == 1, "the same papers for all three"
