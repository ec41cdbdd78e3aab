"""Generated secrets, the registry of values never to print, and PostgreSQL password verifiers computed here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import string

ALPHABET = string.ascii_letters + string.digits

_secrets: set[str] = set()


def add_secret(value: str) -> None:
    """Register a value that `redact` must never let through (the task's output, its errors)."""
    if value and len(value) >= 6:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "********")
    return text


def new_secret(length: int = 50) -> str:
    """A random alphanumeric secret (about 5.95 bits a character): safe in shells, URLs and env files."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def scram_sha256(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"
