"""SCRAM-SHA-256 login: user = the key's name, password = the key, proven without sending it.

The verifier (salt, StoredKey, ServerKey) is made by `scramp` when a key is created. The server
side of the exchange is here (RFC 5802/7677, about 30 lines) because scramp's server refuses the
empty SCRAM user name that libpq sends (PostgreSQL takes the user from the startup message).
An unknown user runs the same exchange against a random verifier, so the answer does not tell
which names exist."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from scramp import ScramMechanism

from governance.keys import KeyHash, KeyInfo, ScramVerifier

MECHANISM = "SCRAM-SHA-256"


def _decoy() -> ScramVerifier:
    salt, stored, server, iterations = ScramMechanism(MECHANISM).make_auth_info(secrets.token_urlsafe(32), iteration_count=4096)
    return ScramVerifier(salt, stored, server, iterations)


def _attrs(message: str) -> dict[str, str]:
    out = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ValueError("malformed SCRAM message")
        out.setdefault(part[0], part[2:])
    return out


class ScramExchange:
    """Server side of one SCRAM exchange."""

    def __init__(self, found: tuple[KeyHash, KeyInfo, ScramVerifier] | None):
        self.found = found
        self.verifier = found[2] if found is not None else _decoy()
        self._bare = self._server_first = self._nonce = self._gs2 = ""

    def first(self, client_first: str) -> str:
        """The server-first message; ValueError on a malformed or channel-bound client-first."""
        if not client_first.startswith(("n,", "y,")):
            raise ValueError("channel binding is not offered")
        comma = client_first.index(",", 2)
        self._gs2, self._bare = client_first[:comma + 1], client_first[comma + 1:]
        client_nonce = _attrs(self._bare).get("r", "")
        if not client_nonce:
            raise ValueError("no client nonce")
        self._nonce = client_nonce + secrets.token_urlsafe(18)
        v = self.verifier
        self._server_first = f"r={self._nonce},s={base64.b64encode(v.salt).decode()},i={v.iterations}"
        return self._server_first

    def final(self, client_final: str) -> str | None:
        """The server-final message, or None when the proof is wrong or the user unknown."""
        try:
            attrs = _attrs(client_final)
            without_proof = client_final[:client_final.rindex(",p=")]
            proof = base64.b64decode(attrs["p"], validate=True)
        except (ValueError, KeyError):
            return None
        if attrs.get("r") != self._nonce or attrs.get("c") != base64.b64encode(self._gs2.encode()).decode():
            return None
        auth_message = f"{self._bare},{self._server_first},{without_proof}".encode()
        v = self.verifier
        signature = hmac.new(v.stored_key, auth_message, hashlib.sha256).digest()
        if len(proof) != len(signature):
            return None
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), v.stored_key) or self.found is None:
            return None
        return "v=" + base64.b64encode(hmac.new(v.server_key, auth_message, hashlib.sha256).digest()).decode()
