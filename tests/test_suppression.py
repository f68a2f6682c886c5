"""The suppression list's keyed hashes: the vectorised hashing gives the digests of the standard library's
HMAC."""

from __future__ import annotations

import hashlib
import hmac

import polars as pl
import pytest

from lake import suppression


@pytest.mark.parametrize("secret", ["s", "a-secret-of-moderate-length", "k" * 64, "long-key-" * 20, "clé-ü"])
def test_hashes_are_the_hmac_sha256_of_each_identifier(secret):
    values = pl.Series("id", ["42", None, "p_0123456789abcdef0123", "42", "", "user-ü-✓"], dtype=pl.String)
    got = suppression.hashes("crm_contact_id", values, secret).to_list()
    expected = [
        None
        if v is None
        else hmac.new(secret.encode(), f"suppressed:crm_contact_id:{v}".encode(), hashlib.sha256).hexdigest()
        for v in values.to_list()
    ]
    assert got == expected
    assert got[1] is None and got[0] == got[3]
    assert got[0] == suppression.identifier_hash("crm_contact_id", "42", secret)


def test_hashes_of_numbers_are_those_of_their_text():
    numbers = pl.Series("contact_id", [7, None, 1234567890123], dtype=pl.Int64)
    got = suppression.hashes("crm_contact_id", numbers, "secret").to_list()
    assert got[0] == suppression.identifier_hash("crm_contact_id", "7", "secret")
    assert got[1] is None
    assert got[2] == suppression.identifier_hash("crm_contact_id", "1234567890123", "secret")
