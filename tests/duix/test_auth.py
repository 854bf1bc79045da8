"""duix.auth: token claims, signing, caching and re-minting."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from pydantic import SecretStr

from duixwatch.core import errors, models
from duixwatch.duix.auth import TokenCache, mint_token
from tests.fakes import START, decode_token

KEY = "k3y-for-tests-that-is-at-least-32-bytes-long"
APP = models.AppCredentials(app_id="1377185422953811968", app_key=SecretStr(KEY))


def test_a_token_is_hs256_with_exactly_app_id_iat_and_exp() -> None:
    token = mint_token(APP.app_id, APP.app_key, now=START, ttl_seconds=1800).get_secret_value()
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = decode_token(token, KEY)
    iat = int(START.timestamp())
    assert claims == {"appId": "1377185422953811968", "iat": iat, "exp": iat + 1800}
    assert isinstance(claims["appId"], str)


def test_a_token_signed_with_the_app_key_does_not_verify_with_another_key() -> None:
    token = mint_token(APP.app_id, APP.app_key, now=START, ttl_seconds=60).get_secret_value()
    with pytest.raises(jwt.InvalidSignatureError):
        decode_token(token, "other")


def test_a_short_app_key_signs_without_warning() -> None:
    """DUIX chooses the key length; PyJWT's short-key warning must not reach operators."""
    token = mint_token("1", SecretStr("short"), now=START, ttl_seconds=60).get_secret_value()
    assert decode_token(token, "short")["appId"] == "1"


def test_an_empty_app_key_is_an_auth_error_that_does_not_sign() -> None:
    with pytest.raises(errors.AuthError, match="appKey is empty"):
        mint_token("1", SecretStr(""), now=START, ttl_seconds=60)


def test_tokens_and_keys_never_show_in_reprs() -> None:
    token = mint_token(APP.app_id, APP.app_key, now=START, ttl_seconds=60)
    assert token.get_secret_value() not in repr(token)
    assert KEY not in repr(APP)
    assert KEY not in str(APP)
    cache = TokenCache(ttl_seconds=60)
    cache.token(APP, now=START)
    assert token.get_secret_value() not in repr(cache)


def test_the_cache_mints_once_and_reuses_until_80_percent_of_the_lifetime() -> None:
    cache = TokenCache(ttl_seconds=1000, refresh_fraction=0.8)
    first = cache.token(APP, now=START)
    assert cache.token(APP, now=START + timedelta(seconds=799)) is first
    assert cache.minted == 1
    second = cache.token(APP, now=START + timedelta(seconds=800))
    assert second is not first
    assert cache.minted == 2
    claims = decode_token(second.get_secret_value(), KEY)
    assert claims["iat"] == int(START.timestamp()) + 800


def test_invalidate_forces_a_new_token_for_that_app_only() -> None:
    other = models.AppCredentials(app_id="2", app_key=SecretStr("x" * 32))
    cache = TokenCache(ttl_seconds=1000)
    cache.token(APP, now=START)
    kept = cache.token(other, now=START)
    cache.invalidate(APP.app_id)
    cache.token(APP, now=START)
    assert cache.token(other, now=START) is kept
    assert cache.minted == 3
