"""What a digest contains: the plan, its items, and the rules that choose its papers.

`Contents` reads the matches and papers a plan stands for (through the store's
connection, without importing sqlite-utils) and applies the domain rules: the first
digest's cap, a resumed reader's cap, each paper once under the first keyword it is
new under, and no paper a reader already had under another keyword.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from digest.paper import Paper

if TYPE_CHECKING:
    from digest.store import Store


@dataclass(frozen=True)
class Plan:
    """What one digest contains: for each keyword, the matches after `since` up to `top`.

    Where `since` is None nothing was delivered for that keyword yet: the digest has the
    newest `cap` matches up to `first` (fixed when it was first planned), then all after it.

    `resumed` is set for the first digest after a reader's pause (`paused_until`): the date
    of their last digest before it ("" when not known). Each keyword then has only its
    newest `cap` matches after `since`; the others count as "and N more" (`Contents.held`).
    `weekly`: a weekly reader's digest (the renderer names the week in header and subject).
    """

    keywords: tuple[str, ...]
    since: tuple[int | None, ...]
    first: tuple[int | None, ...]
    top: int
    cap: int
    resumed: str | None = None
    weekly: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "keywords": self.keywords,
                "since": self.since,
                "first": self.first,
                "top": self.top,
                "cap": self.cap,
                # Only when set: plans written before pauses existed read back equal.
                **({} if self.resumed is None else {"resumed": self.resumed}),
                **({"weekly": True} if self.weekly else {}),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        return cls(
            tuple(data["keywords"]),
            tuple(data["since"]),
            tuple(data["first"]),
            data["top"],
            data["cap"],
            data.get("resumed"),
            data.get("weekly") is True,
        )

    @property
    def content_key(self) -> tuple[object, ...]:
        """Plans with equal keys have equal contents: their readers share one rendering."""
        return (
            self.keywords,
            self.since,
            self.first,
            self.top,
            self.cap,
            self.resumed,
            self.weekly,
        )


@dataclass(frozen=True)
class Item:
    """One paper in a digest, under the first of the subscriber's keywords it matches."""

    paper: Paper
    keyword: str
    also: tuple[str, ...]


def paper_from_row(row: dict[str, Any]) -> Paper:
    """A `papers` row read back as a Paper."""
    return Paper(
        arxiv_id=row["id"],
        version=row["version"],
        title=row["title"],
        summary=row["summary"],
        authors=tuple(json.loads(row["authors"])),
        published=datetime.fromisoformat(row["published"]),
        updated=datetime.fromisoformat(row["updated"]),
        primary_category=row["primary_category"],
        categories=tuple(json.loads(row["categories"])),
        comment=row["comment"],
    )


class Contents:
    """What plans contain, read for one phase of a run: each selection and paper once.

    A run plans many distinct contents (bench/README.md counts them; each sending process
    builds its share of them) from the same few hundred papers: asking SQLite once per
    plan read and parsed the same rows once per plan. Matches up to a plan's `top` and stored papers only
    change in `Store.record`, so one `Contents` must not outlive the phase it serves.
    """

    def __init__(self, store: Store) -> None:
        self.db = store.db
        self._selected: dict[tuple[str, int | None, int | None, int, int, bool], list[str]] = {}
        self._held: dict[tuple[str, int, int], int] = {}  # (keyword, since, top) -> matches
        self._matches: dict[str, list[tuple[str, int]]] = {}  # paper id -> (keyword, seq)
        self._papers: dict[str, Paper] = {}

    def count(self, plan: Plan) -> int:
        """How many papers `items(plan)` holds, without reading them."""
        return len(self._chosen(plan))

    def items(self, plan: Plan) -> list[Item]:
        """The papers a plan stands for, each once, in keyword order, newest first."""
        chosen = self._chosen(plan)
        self._read_papers(chosen)
        order = {k: i for i, k in enumerate(plan.keywords)}
        items = [
            Item(
                paper=self._papers[pid],
                keyword=keyword,
                also=tuple(
                    sorted(
                        {k for k, seq in self._matches[pid] if seq <= plan.top and k in order}
                        - {keyword},
                        key=order.__getitem__,
                    )
                ),
            )
            for pid, keyword in chosen.items()
        ]
        items.sort(
            key=lambda i: (order[i.keyword], -i.paper.published.timestamp(), i.paper.arxiv_id)
        )
        return items

    def _chosen(self, plan: Plan) -> dict[str, str]:
        """{paper id: the first of the plan's keywords it is new under}."""
        chosen: dict[str, str] = {}
        for keyword, since, first in zip(plan.keywords, plan.since, plan.first, strict=True):
            capped = plan.resumed is not None
            for paper_id in self._selection(keyword, since, first, plan.top, plan.cap, capped):
                chosen.setdefault(paper_id, keyword)
        if not chosen or all(since is None for since in plan.since):
            return chosen
        # A paper the subscriber already had under another keyword is not new to them.
        self._read_matches(chosen)
        since_by_keyword = dict(zip(plan.keywords, plan.since, strict=True))
        return {
            pid: keyword
            for pid, keyword in chosen.items()
            if not any(
                (since := since_by_keyword.get(k)) is not None and seq <= min(since, plan.top)
                for k, seq in self._matches[pid]
            )
        }

    def held(self, plan: Plan) -> dict[str, int]:
        """{keyword: its matches a resumed plan leaves out}, for "and N more since DATE"."""
        if plan.resumed is None:
            return {}
        held = {}
        for keyword, since in zip(plan.keywords, plan.since, strict=True):
            if since is None:
                continue
            key = (keyword, since, plan.top)
            if key not in self._held:
                (self._held[key],) = self.db.execute(
                    "SELECT count(*) FROM matches WHERE keyword = ? AND seq > ? AND seq <= ?",
                    [keyword, since, plan.top],
                ).fetchone()
            if (more := self._held[key] - plan.cap) > 0:
                held[keyword] = more
        return held

    def _selection(
        self,
        keyword: str,
        since: int | None,
        first: int | None,
        top: int,
        cap: int,
        capped: bool = False,
    ) -> list[str]:
        """One keyword's paper ids for a plan: after `since` (only the newest `cap` of them
        when `capped`), or the newest `cap` up to `first` and all after it."""
        key = (keyword, since, first, top, cap, capped)
        if key in self._selected:
            return self._selected[key]
        if since is not None and capped:
            rows = self.db.execute(
                "SELECT m.paper_id FROM matches m JOIN papers p ON p.id = m.paper_id "
                "WHERE m.keyword = ? AND m.seq > ? AND m.seq <= ? "
                "ORDER BY p.published DESC, p.id DESC LIMIT ?",
                [keyword, since, top, cap],
            )
        elif since is None:
            first = top if first is None else first
            rows = self.db.execute(
                "SELECT * FROM (SELECT m.paper_id FROM matches m JOIN papers p ON p.id = m.paper_id "
                "WHERE m.keyword = ? AND m.seq <= ? ORDER BY p.published DESC, p.id DESC LIMIT ?) "
                "UNION ALL SELECT paper_id FROM matches WHERE keyword = ? AND seq > ? AND seq <= ?",
                [keyword, first, cap, keyword, first, top],
            )
        else:
            rows = self.db.execute(
                "SELECT paper_id FROM matches WHERE keyword = ? AND seq > ? AND seq <= ?",
                [keyword, since, top],
            )
        selected = self._selected[key] = [paper_id for (paper_id,) in rows]
        return selected

    def _read_matches(self, paper_ids: Iterable[str]) -> None:
        missing = [pid for pid in paper_ids if pid not in self._matches]
        if not missing:
            return
        for pid in missing:
            self._matches[pid] = []
        for paper_id, keyword, seq in self.db.execute(
            "SELECT m.paper_id, m.keyword, m.seq FROM matches m JOIN json_each(?) j "
            "ON j.value = m.paper_id",
            [json.dumps(missing)],
        ):
            self._matches[paper_id].append((keyword, seq))

    def _read_papers(self, paper_ids: Iterable[str]) -> None:
        """Papers not read yet, with their matches (`items` needs both)."""
        missing = [pid for pid in paper_ids if pid not in self._papers]
        if not missing:
            return
        self._read_matches(missing)
        for row in self.db.query(
            "SELECT p.* FROM papers p JOIN json_each(?) j ON j.value = p.id",
            [json.dumps(missing)],
        ):
            self._papers[row["id"]] = paper_from_row(row)
