"""A caller's credential, sealed with KMS for the one place it must be kept: a deferred retry.

Only a caller that sends its own credential *and* asks for a deferred answer (``Prefer:
respond-async``, or a caller set to the deferral contract) has one kept, in its request
record, for the record's life, and removed when the request ends. Never in a queue message,
log, metric or error.

``Encrypt`` under the stack's KMS key, with an encryption context naming the request: the
ciphertext opens only for that request id, and KMS records every use in CloudTrail. A Kisi
credential is far below KMS's 4 KB plaintext limit, so no data key (envelope) is needed; the
gateway ships no cipher of its own.
"""

from __future__ import annotations

import logging
from typing import Any

from kisi_gateway.core.identity import Credential, CredentialError, parse_authorization
from kisi_gateway.stores.dynamo import read
from kisi_gateway.stores.ports import VaultError

PURPOSE = "kisi-gateway/caller-credential"


def _context(context: str) -> dict[str, str]:
    return {"purpose": PURPOSE, "request": context}


# botocore logs whole request and answer bodies at DEBUG: KMS Encrypt's Plaintext and
# Decrypt's answer are a caller's credential (base64). Wherever a vault exists, those loggers
# never go below INFO, whatever level the function's logging is set to.
WIRE_LOGGERS = ("botocore.endpoint", "botocore.parsers", "botocore.hooks")


def quiet_wire_logs() -> None:
    """Keep botocore's wire logs (request and answer bodies) out of every log."""
    for name in WIRE_LOGGERS:
        wire = logging.getLogger(name)
        if wire.getEffectiveLevel() < logging.INFO or wire.level < logging.INFO:
            wire.setLevel(logging.INFO)


class KmsVault:
    """:class:`~kisi_gateway.stores.ports.CredentialVault` on AWS KMS."""

    def __init__(self, client: Any, key_id: str) -> None:
        self._client = client
        self._key_id = key_id
        quiet_wire_logs()

    def seal(self, credential: Credential, context: str) -> bytes:
        request = {"KeyId": self._key_id, "Plaintext": credential.header().encode(),
                   "EncryptionContext": _context(context)}
        sealed: bytes = read(self._client.encrypt, request, VaultError)["CiphertextBlob"]
        return sealed

    def open(self, sealed: bytes, context: str) -> Credential:
        request = {"KeyId": self._key_id, "CiphertextBlob": sealed,
                   "EncryptionContext": _context(context)}
        plain: bytes = read(self._client.decrypt, request, VaultError)["Plaintext"]
        try:
            credential = parse_authorization(plain.decode())
        except (UnicodeDecodeError, CredentialError) as exc:
            raise VaultError("a sealed credential did not open to a credential") from exc
        if credential is None:
            raise VaultError("a sealed credential opened empty")
        return credential
