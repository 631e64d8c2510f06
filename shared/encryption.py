"""Secrets the platform must read back, encrypted at rest.

Webhook signing secrets cannot be hashed as client secrets are: signing needs the secret itself.
They are stored as Fernet tokens (AES-128-CBC with HMAC-SHA256) under the `SECRETS_KEY` setting:
one or more keys, comma-separated, newest first. The first key encrypts and every key decrypts,
so a key is rotated by putting a new one in front, re-encrypting what is stored
(`attendance notifications reencrypt-secrets`) and then dropping the old key.
"""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet, MultiFernet


class SecretBox:
    def __init__(self, keys: str) -> None:
        fernets = [Fernet(key.strip()) for key in keys.split(",") if key.strip()]
        if not fernets:
            raise ValueError("no key given")
        self._fernet = MultiFernet(fernets)

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, stored: str) -> str:
        return self._fernet.decrypt(stored.encode()).decode()

    def reencrypt(self, stored: str) -> str:
        """The same secret under the newest key."""
        return self._fernet.rotate(stored.encode()).decode()


@cache
def secret_box(keys: str) -> SecretBox:
    return SecretBox(keys)


def new_key() -> str:
    return Fernet.generate_key().decode()
