"""Signed, expiring subscription tokens for private channels (`user:{id}`).

A token is `"{expires_at}.{signature}"`: the signature is HMAC-SHA256 over the set of channels
it grants and the expiry, in url-safe base64 without padding, so the token can sit in a query
string as is. The API makes tokens for a signed-in user; the edge (or the authorize endpoint
behind Nchan) checks them without a round trip to any store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

PRIVATE_PREFIXES = ("user:",)


def is_private(channel: str) -> bool:
    return channel.startswith(PRIVATE_PREFIXES)


def private_channels(channels: Iterable[str]) -> list[str]:
    """The channels of a subscription that need a token."""
    return [channel for channel in channels if is_private(channel)]


def _is_small_number(text: str) -> bool:
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit()


def _signature(secret: str, channels: Iterable[str], expires_at: int) -> str:
    granted = ",".join(sorted(set(channels)))
    mac = hmac.new(secret.encode(), f"{granted}\n{expires_at}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def sign_subscription(secret: str, channels: Iterable[str], expires_at: int | float) -> str:
    """A token granting exactly `channels` (any order) until `expires_at` (epoch seconds)."""
    expiry = int(expires_at)
    return f"{expiry}.{_signature(secret, channels, expiry)}"


def verify_subscription(secret: str, token: str, channels: Iterable[str], now: float) -> bool:
    """True when `token` was signed with `secret` for exactly `channels` and is not expired."""
    expiry_text, dot, signature = token.partition(".")
    if not dot or not _is_small_number(expiry_text):
        return False
    expiry = int(expiry_text)
    if now >= expiry:
        return False
    return hmac.compare_digest(signature.encode(), _signature(secret, channels, expiry).encode())
