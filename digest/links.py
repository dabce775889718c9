"""The links a digest gives each reader: their signed unsubscribe link and manage page.

Built by the run for every message and by the web endpoint's tests and tools alike, so
neither has to import the other (the run would otherwise pull in the HTTP server).
"""

from __future__ import annotations

from datetime import datetime

from digest.tokens import make_link_code


def unsubscribe_url(base_url: str, secret: bytes, reader: int, now: datetime) -> str:
    """The per-reader link a digest carries; `reader` is Store.reader_id of the address.

    ~68 characters with a base_url of 26, so List-Unsubscribe can carry it on one line.
    """
    return f"{base_url}/unsubscribe?t={make_link_code(secret, reader, issued=now)}"


def manage_url(base_url: str, unsubscribe: str) -> str:
    """The reader's manage page: /manage with the link code of their unsubscribe link."""
    return f"{base_url}/manage?t={unsubscribe.rpartition('?t=')[2]}"
