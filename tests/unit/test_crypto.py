"""Envelope encryption and keyed digests, without a database."""

from __future__ import annotations

import uuid

import pytest

from adapters.crypto import CryptoError, DataKey, InvalidMasterKeyError, MasterKey, generate_key


def test_a_data_key_round_trips_through_the_master_key() -> None:
    master = MasterKey(generate_key())
    customer = uuid.uuid4()
    key = generate_key()
    assert master.unwrap(customer, master.wrap(customer, key)) == key


def test_unwrapping_with_the_wrong_master_key_fails() -> None:
    customer = uuid.uuid4()
    wrapped = MasterKey(generate_key()).wrap(customer, generate_key())
    with pytest.raises(CryptoError):
        MasterKey(generate_key()).unwrap(customer, wrapped)


def test_a_wrapped_key_moved_to_another_customer_does_not_unwrap() -> None:
    master = MasterKey(generate_key())
    wrapped = master.wrap(uuid.uuid4(), generate_key())
    with pytest.raises(CryptoError):
        master.unwrap(uuid.uuid4(), wrapped)


def test_personal_data_round_trips_and_is_not_readable_in_the_ciphertext() -> None:
    key = DataKey(uuid.uuid4(), generate_key())
    blob = key.encrypt(b'{"email":"ada@example.com"}')
    assert b"ada@example.com" not in blob
    assert key.decrypt(blob) == b'{"email":"ada@example.com"}'


def test_decrypting_with_another_customers_key_fails() -> None:
    blob = DataKey(uuid.uuid4(), generate_key()).encrypt(b"secret")
    with pytest.raises(CryptoError):
        DataKey(uuid.uuid4(), generate_key()).decrypt(blob)


def test_a_tampered_ciphertext_is_detected() -> None:
    key = DataKey(uuid.uuid4(), generate_key())
    blob = bytearray(key.encrypt(b"secret"))
    blob[-1] ^= 1
    with pytest.raises(CryptoError):
        key.decrypt(bytes(blob))


def test_encrypting_twice_gives_different_ciphertexts() -> None:
    key = DataKey(uuid.uuid4(), generate_key())
    assert key.encrypt(b"same") != key.encrypt(b"same")


def test_digests_are_equal_for_equal_payloads_and_depend_on_the_customer_key() -> None:
    customer = uuid.uuid4()
    raw = generate_key()
    one, same, other = (
        DataKey(customer, raw),
        DataKey(customer, raw),
        DataKey(customer, generate_key()),
    )
    assert one.digest(b"payload") == same.digest(b"payload")
    assert one.digest(b"payload") != one.digest(b"payload2")
    assert one.digest(b"payload") != other.digest(b"payload")


@pytest.mark.parametrize("text", ["not base64!", "c2hvcnQ="])
def test_a_malformed_master_key_is_refused_with_a_clear_error(text: str) -> None:
    with pytest.raises(InvalidMasterKeyError):
        MasterKey.from_text(text)
