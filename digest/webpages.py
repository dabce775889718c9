"""The web pages' HTML, from the Jinja2 templates in templates/web (autoescaped)."""

from __future__ import annotations

import functools
from typing import Any

import jinja2

from digest.render import templates_dir
from digest.webforms import Response


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "web")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
    )


def page(status: int, template: str, title: str, **values: Any) -> Response:
    """A page from templates/web/<template>.html.j2."""
    html = _environment().get_template(f"{template}.html.j2").render(title=title, **values)
    return Response(status, html.encode())


def message(
    status: int,
    title: str,
    text: str,
    *,
    action: str | None = None,
    button: str = "Confirm",
    hidden: tuple[tuple[str, str], ...] = (),
    link: tuple[str, str] | None = None,
) -> Response:
    """A page that says one thing, with a button to POST (`action`) or a link to go on."""
    return page(
        status,
        "message",
        title,
        text=text,
        action=action,
        button=button,
        hidden=hidden,
        link=link,
    )
