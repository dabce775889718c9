"""Starting the daemon's web face: the pages, the unsubscribe endpoint and the thread that
sends their confirmation mails, when [web] is set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from digest.config import Config
from digest.errors import ConfigError
from digest.site import Site
from digest.web import WebServer
from digest.webmail import WebMailer

# The daemon's logger: these lines are the daemon's, whichever module writes them.
log = logging.getLogger("digest.daemon")


def start_web(config: Config, current: Callable[[], Config] | None = None) -> WebServer | None:
    """Serve the pages and the unsubscribe endpoint when [web] is set, with the thread
    that sends the confirmation mails; `current` gives the configuration as last loaded
    (a change of [web] itself needs a restart)."""
    if config.web is None or config.secret is None:
        return None
    mailer = WebMailer(
        config.db_path,
        config.smtp,
        config.digest.sender,
        cafile=os.environ.get("DIGEST_SMTP_CAFILE"),
    )
    site = Site(current or (lambda: config), mailer)
    try:
        server = WebServer(site, config.web.host, config.web.port).start()
    except OSError as e:
        raise ConfigError(
            f"{config.path}: [web] cannot listen on {config.web.host}:{config.web.port} "
            f"({e.strerror}); change 'listen' or stop what uses the port"
        ) from e
    except ValueError as e:  # waitress found no address for the host
        raise ConfigError(
            f"{config.path}: [web] cannot listen on {config.web.host}:{config.web.port} "
            "(no such address here); change 'listen' to an address of this machine"
        ) from e
    mailer.start().wake()  # mails a stop left queued go out now
    server.also_stop.append(mailer.stop)
    log.info(
        "web pages and unsubscribe links served on %s:%d for %s",
        config.web.host,
        server.port,
        config.web.base_url,
    )
    return server
