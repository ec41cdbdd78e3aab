import base64
import hashlib
import hmac

from sum_tasks.commands.credentials import ALPHABET, new_secret, scram_sha256


def test_secrets_are_long_alphanumeric_and_distinct():
    values = {new_secret() for _ in range(50)}
    assert len(values) == 50
    assert all(len(v) == 50 and set(v) <= set(ALPHABET) for v in values)


def test_scram_verifier_matches_rfc7677_construction():
    salt = b"0123456789abcdef"
    verifier = scram_sha256("pencil", salt=salt)
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt64 = iterations_salt.split(":")
    stored64, server64 = keys.split(":")
    assert method == "SCRAM-SHA-256" and iterations == "4096" and base64.b64decode(salt64) == salt
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    assert base64.b64decode(stored64) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server64) == hmac.new(salted, b"Server Key", "sha256").digest()
    assert "pencil" not in verifier
