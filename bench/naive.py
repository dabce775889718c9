"""The naive baseline, run as its own process: every message built and sent on its own.

    python bench/naive.py --subscribers FILE --db FILE --port P --sample 300 --out FILE

For a seeded sample of the digests a `digest send` run planned (read from its database),
each message is rendered with digest's Renderer (premailer included), built as a whole
EmailMessage and sent over a new SMTP connection. The database reads happen before the
clock starts, so the rate is a fair (generous) baseline. The messages go to --out, for
the ceiling to send the same sizes. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import time
from dataclasses import replace
from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import aiosmtplib
import sqlite_utils

from digest.config import Config, load_config
from digest.mail import POLICY, sender_address
from digest.render import Renderer, Section, personalize
from digest.store import Plan, Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clients import write_messages


def sections(config: Config, store: Store, plan: Plan) -> list[Section]:
    """A plan's papers by keyword, as `digest send` shows them."""

    def name(key: str) -> str:
        return config.keywords[key].name if key in config.keywords else key

    items = [
        replace(i, keyword=name(i.keyword), also=tuple(name(k) for k in i.also))
        for i in store.contents(plan)
    ]
    return [
        Section(name(k), tuple(i for i in items if i.keyword == name(k))) for k in plan.keywords
    ]


def build(
    config: Config,
    rendered_text: str,
    rendered_html: str,
    subject: str,
    to: tuple[str, str | None],
    message_id: str,
    created: datetime,
) -> bytes:
    """One whole message, the way a first version of digest would build it."""
    address = sender_address(config.digest.sender)
    message = EmailMessage(policy=POLICY)
    message["From"] = config.digest.sender
    message["To"] = str(Address(display_name=to[1] or "", addr_spec=to[0]))
    message["Subject"] = subject
    message["Date"] = format_datetime(created)
    message["Message-ID"] = message_id
    message["List-Id"] = f"arXiv digest <digest.{address.replace('@', '.')}>"
    message["List-Unsubscribe"] = f"<mailto:{address}?subject=unsubscribe>"
    message["Auto-Submitted"] = "auto-generated"
    message["Precedence"] = "bulk"
    message.set_content(rendered_text, subtype="plain", charset="utf-8")
    message.add_alternative(rendered_html, subtype="html", charset="utf-8")
    return message.as_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=Path, required=True)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    config = load_config(args.subscribers, env={}, db_path=args.db)
    names = {s.email.casefold(): (s.email, s.name) for s in config.subscribers}
    conn = sqlite3.connect(f"{args.db.resolve().as_uri()}?mode=ro", uri=True)
    store = Store(sqlite_utils.Database(conn), None)
    ids = [r["id"] for r in store.db.query("SELECT id FROM digests ORDER BY id")]
    chosen = sorted(random.Random(args.seed).sample(ids, min(args.sample, len(ids))))
    rows = [next(store.db.query("SELECT * FROM digests WHERE id = ?", [i])) for i in chosen]
    work = [(r, sections(config, store, Plan.from_json(r["plan"]))) for r in rows]
    renderer = Renderer(inline_each=True)  # premailer per message, as a first version would
    address = sender_address(config.digest.sender)
    unsubscribe = f"mailto:{address}?subject=unsubscribe"

    async def send_all() -> list[bytes]:
        messages = []
        for row, secs in work:
            plan = Plan.from_json(row["plan"])
            rendered = renderer.render(
                date.fromisoformat(row["digest_date"]),
                secs,
                [config.keywords[k].name for k in plan.keywords],
                from_address=address,
            )
            text, html = personalize(rendered, unsubscribe)
            to = names[row["email"]]
            data = build(
                config,
                text,
                html,
                rendered.subject,
                to,
                row["message_id"],
                datetime.fromisoformat(row["created"]),
            )
            await aiosmtplib.send(
                data,
                sender=address,
                recipients=[to[0]],
                hostname="127.0.0.1",
                port=args.port,
                use_tls=False,
                start_tls=False,
            )
            messages.append(data)
        return messages

    start = time.perf_counter()
    messages = asyncio.run(send_all())
    seconds = time.perf_counter() - start
    write_messages(args.out, messages)
    print(
        json.dumps(
            {
                "messages": len(messages),
                "seconds": seconds,
                "rate": len(messages) / seconds,
                "premailer_calls": renderer.inlined,
                "mean_bytes": sum(map(len, messages)) / max(1, len(messages)),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
