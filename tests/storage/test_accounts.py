"""Accounts against every backend: registration codes (ok, bad, expired,
missing, attempts, one-time use), device registration (ids go up, the old
key stops being valid), and both at once (``confirm_device``)."""

from __future__ import annotations

import pytest

from storage import Account, BadCode, CodeCheck, InvalidArgument
from storage.accounts import hash_code

from storage_testkit import KEY, RECEIVER, SENDER

NOW = 1_700_000_000_000


async def test_code_ok_is_consumed(backend):
    s = backend.storage
    await s.put_code(SENDER, hash_code(SENDER, "123456"), NOW + 60_000)
    assert await s.check_code(SENDER, "123456", NOW) == CodeCheck("ok", 1)
    assert await s.check_code(SENDER, "123456", NOW) == CodeCheck("missing", 0)


async def test_bad_codes_count_attempts(backend):
    s = backend.storage
    await s.put_code(SENDER, hash_code(SENDER, "123456"), NOW + 60_000)
    assert await s.check_code(SENDER, "000000", NOW) == CodeCheck("bad", 1)
    assert await s.check_code(SENDER, "111111", NOW) == CodeCheck("bad", 2)
    assert await s.check_code(SENDER, "123456", NOW) == CodeCheck("ok", 3)


async def test_code_expires(backend):
    s = backend.storage
    await s.put_code(SENDER, hash_code(SENDER, "123456"), NOW + 60_000)
    assert await s.check_code(SENDER, "123456", NOW + 60_000) == CodeCheck("expired", 1)
    assert await s.check_code(SENDER, "123456", NOW) == CodeCheck("missing", 0)


async def test_new_code_replaces_the_old_one(backend):
    s = backend.storage
    await s.put_code(SENDER, hash_code(SENDER, "111111"), NOW + 60_000)
    await s.check_code(SENDER, "999999", NOW)
    await s.put_code(SENDER, hash_code(SENDER, "222222"), NOW + 60_000)
    assert await s.check_code(SENDER, "111111", NOW) == CodeCheck("bad", 1)
    assert await s.check_code(SENDER, "222222", NOW) == CodeCheck("ok", 2)


async def test_code_is_bound_to_its_phone(backend):
    s = backend.storage
    await s.put_code(SENDER, hash_code(RECEIVER, "123456"), NOW + 60_000)
    assert (await s.check_code(SENDER, "123456", NOW)).status == "bad"


async def test_register_device_counts_and_replaces_the_key(backend):
    s = backend.storage
    assert s.get_account(SENDER) is None
    assert await s.register_device(SENDER, KEY, NOW) == 1
    assert s.get_account(SENDER) == Account(SENDER, 1, KEY, NOW)
    new_key = bytes(32)
    assert await s.register_device(SENDER, new_key, NOW + 5) == 2
    account = s.get_account(SENDER)
    assert account == Account(SENDER, 2, new_key, NOW + 5)
    assert account.verify_key != KEY                      # the old device is out


@pytest.mark.parametrize("phone", ["15550000001", "+1555", "+1234567890123456", "+0555000000",
                                   "+1555000000\u0661", "+1555 0000001", "", None])
async def test_malformed_phones_are_refused(backend, phone):
    with pytest.raises(InvalidArgument):
        await backend.storage.register_device(phone, KEY, NOW)
    with pytest.raises(InvalidArgument):
        backend.storage.get_account(phone)


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(33), "x" * 32])
async def test_verify_key_must_be_32_bytes(backend, key):
    with pytest.raises(InvalidArgument):
        await backend.storage.register_device(SENDER, key, NOW)
    assert backend.storage.get_account(SENDER) is None


# -- confirm_device: check the code and register, in one transaction -------------
async def test_confirm_device_registers_and_consumes_the_code(backend):
    s = backend.storage
    await s.put_code(SENDER, b"H" * 32, NOW + 60_000)
    assert await s.confirm_device(SENDER, b"H" * 32, KEY, NOW) == 1
    assert s.get_account(SENDER) == Account(SENDER, 1, KEY, NOW)
    with pytest.raises(BadCode, match="no code was requested") as caught:
        await s.confirm_device(SENDER, b"H" * 32, KEY, NOW)
    assert caught.value.status == "missing"
    await s.put_code(SENDER, b"I" * 32, NOW + 60_000)
    assert await s.confirm_device(SENDER, b"I" * 32, bytes(32), NOW + 1) == 2


async def test_confirm_device_counts_wrong_codes(backend):
    s = backend.storage
    await s.put_code(SENDER, b"H" * 32, NOW + 60_000)
    for attempt in (1, 2):
        with pytest.raises(BadCode, match=f"wrong code \\(attempt {attempt}\\)") as caught:
            await s.confirm_device(SENDER, b"X" * 32, KEY, NOW)
        assert (caught.value.status, caught.value.attempts) == ("bad", attempt)
    assert s.get_account(SENDER) is None
    assert await s.check_code(SENDER, "wrong", NOW) == CodeCheck("bad", 3)   # persisted


async def test_confirm_device_with_an_expired_code(backend):
    s = backend.storage
    await s.put_code(SENDER, b"H" * 32, NOW)
    with pytest.raises(BadCode, match="expired"):
        await s.confirm_device(SENDER, b"H" * 32, KEY, NOW)
    assert s.get_account(SENDER) is None


async def test_confirm_device_with_a_bad_key_keeps_the_code(backend):
    s = backend.storage
    await s.put_code(SENDER, b"H" * 32, NOW + 60_000)
    with pytest.raises(InvalidArgument):
        await s.confirm_device(SENDER, b"H" * 32, b"short", NOW)
    assert await s.confirm_device(SENDER, b"H" * 32, KEY, NOW) == 1
