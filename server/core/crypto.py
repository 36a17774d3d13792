"""Secrets kept at rest (REDCap API tokens): Fernet, with the key(s) from settings.

REDCAP_TOKEN_KEY holds one or more comma-separated Fernet keys: the first encrypts, every one
decrypts, so a key is rotated by putting the new one first. Outside production an empty
setting falls back to a key derived from JWT_SECRET_KEY, so development works out of the box
(and stays readable as long as JWT_SECRET_KEY does not change); production refuses to start
without one (see Settings).
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from server.core.config import Settings
from server.core.errors import AppError

_DEV_KEY_CONTEXT = b"metricis/redcap-token-key/v1:"


class SecretUnreadable(AppError):
    status_code = 409
    error_code = "secret_unreadable"
    message = (
        "A stored secret cannot be decrypted with the configured key (REDCAP_TOKEN_KEY was "
        "changed?); enter it again."
    )


def derived_dev_key(jwt_secret: str) -> str:
    digest = hashlib.sha256(_DEV_KEY_CONTEXT + jwt_secret.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


def token_keys(settings: Settings) -> tuple[str, ...]:
    configured = settings.redcap_token_keys_configured
    if configured:
        return tuple(configured)
    return (derived_dev_key(settings.JWT_SECRET_KEY.get_secret_value()),)


class SecretBox:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(ciphertext)).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise SecretUnreadable() from None


@lru_cache(maxsize=8)
def _box(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(keys)


def token_box(settings: Settings) -> SecretBox:
    """The box for REDCap API tokens under these settings."""
    return _box(token_keys(settings))
