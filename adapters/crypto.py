"""Envelope encryption of personal data: one data key per customer, wrapped by a master key.

Deleting a customer's wrapped key makes every personal field ever stored for them
unreadable (crypto-shredding) while the rest of the history, and its hash chain, stay
intact. AES-256-GCM from `cryptography`; the customer's aggregate id is the associated
data, so a ciphertext moved to another customer fails to decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from base64 import b64decode, b64encode
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.errors import ConfigurationError, EventcrmError

KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT_V1 = b"\x01"


class CryptoError(EventcrmError):
    """Decryption failed: wrong key, tampered bytes, or bytes of another customer."""


class InvalidMasterKeyError(ConfigurationError):
    """The configured master key is not base64 of 32 bytes."""

    code = "invalid_master_key"

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            hint="set EVENTCRM_MASTER_KEY to base64 of 32 random bytes "
            "(python3 -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())')",
        )


class WrongMasterKeyError(CryptoError, ConfigurationError):
    """Stored data keys were wrapped by another master key than the configured one."""

    code = "wrong_master_key"


def generate_key() -> bytes:
    return os.urandom(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return b64encode(key).decode("ascii")


class MasterKey:
    """Wraps and unwraps customers' data keys; never encrypts data itself."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise InvalidMasterKeyError(f"the master key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        self.raw = key
        self.key_id = hashlib.sha256(b"eventcrm-master-key-id" + key).hexdigest()[:16]
        """Names the master key in the key table, so rotation can tell old wraps apart."""

    def __reduce__(self) -> tuple[type[MasterKey], tuple[bytes]]:
        """Pickled (to hand a role process its key) as the raw key, never the cipher."""
        return (MasterKey, (self.raw,))

    @classmethod
    def from_text(cls, text: str) -> MasterKey:
        try:
            raw = b64decode(text.strip(), validate=True)
        except ValueError:
            raise InvalidMasterKeyError("EVENTCRM_MASTER_KEY is not valid base64") from None
        return cls(raw)

    def wrap(self, customer: UUID, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT_V1 + nonce + self._aead.encrypt(nonce, data_key, customer.bytes)

    def unwrap(self, customer: UUID, wrapped: bytes) -> bytes:
        return _open(self._aead, customer, wrapped)


def _open(aead: AESGCM, customer: UUID, blob: bytes) -> bytes:
    if blob[:1] != FORMAT_V1 or len(blob) < 1 + NONCE_BYTES + 16:
        raise CryptoError("unknown ciphertext format")
    nonce = blob[1 : 1 + NONCE_BYTES]
    try:
        return aead.decrypt(nonce, blob[1 + NONCE_BYTES :], customer.bytes)
    except InvalidTag:
        raise CryptoError("ciphertext does not authenticate with this key") from None


class DataKey:
    """One customer's key: encrypts their personal fields and keys their payload digests."""

    __slots__ = ("_aead", "_digest_key", "customer")

    def __init__(self, customer: UUID, key: bytes) -> None:
        self.customer = customer
        self._aead = AESGCM(key)
        # A separate subkey for HMAC: one key, one purpose.
        self._digest_key = hashlib.sha256(b"eventcrm-digest-v1" + key).digest()

    def encrypt(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT_V1 + nonce + self._aead.encrypt(nonce, plaintext, self.customer.bytes)

    def decrypt(self, blob: bytes) -> bytes:
        return _open(self._aead, self.customer, blob)

    def digest(self, canonical: bytes) -> str:
        """Keyed digest of a payload: equal payloads match, and after erasure nobody can
        test a guessed e-mail address against it."""
        return hmac.new(self._digest_key, canonical, hashlib.sha256).hexdigest()
