"""Comment HTML: a small allow-list, everything else removed (nh3, the Rust ammonia cleaner)."""

from __future__ import annotations

import nh3

ALLOWED_TAGS = {"a", "b", "strong", "i", "em", "u", "s", "p", "br", "code", "pre", "blockquote", "ul", "ol", "li"}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}


def clean_message(html: str) -> str:
    """Sanitize comment HTML: scripts, event handlers and unsafe URLs never survive."""
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow noopener noreferrer ugc",
        strip_comments=True,
    ).strip()
