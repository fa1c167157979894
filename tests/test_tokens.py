"""JWT keys, verification and grants (sse_offload.tokens), with tokens PyJWT makes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sse_offload.tokens import (
    LEEWAY,
    Claims,
    TokenError,
    TokenKeyError,
    parse_token_key,
    token_from_request,
    verify,
)

SECRET = "s" * 40
GRANTS: dict[str, Any] = {"sse": {"publish": ["news", "room.*"], "subscribe": ["*"]}}


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(private: Any) -> bytes:
    return bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.fixture()
def rsa_pem_file(tmp_path: Path, rsa_private: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "public.pem"
    path.write_bytes(_public_pem(rsa_private))
    return path


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


# -- keys --------------------------------------------------------------------------------


def test_plain_text_and_hs256_prefix_are_hs256_secrets() -> None:
    for text in (SECRET, "hs256:" + SECRET, "HS256:" + SECRET):
        key = parse_token_key(text)
        assert key.algorithms == ("HS256",)
        assert key.key == SECRET.encode()
        assert SECRET not in repr(key)


def test_short_secret_is_refused_with_reason() -> None:
    with pytest.raises(TokenKeyError, match="at least 32 bytes, this one has 6"):
        parse_token_key("hs256:secret")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        parse_token_key("")


def test_secret_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    key = parse_token_key(f"@{path}")
    assert key.key == SECRET.encode() and key.algorithms == ("HS256",)
    assert verify(key, hs256(GRANTS)).may_publish("news")


def test_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokenKeyError, match="cannot read token key file"):
        parse_token_key(f"@{tmp_path / 'nope'}")


def test_rsa_pem_pins_rs256(rsa_pem_file: Path) -> None:
    key = parse_token_key(f"@{rsa_pem_file}")
    assert key.algorithms == ("RS256",)
    assert "RSA public key" in key.source


def test_ec_pem_pins_es_algorithm_by_curve(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    path = tmp_path / "ec.pem"
    path.write_bytes(_public_pem(private))
    key = parse_token_key(f"@{path}")
    assert key.algorithms == ("ES384",)
    token = jwt.encode(GRANTS, private, algorithm="ES384")
    assert verify(key, token).may_subscribe("anything")


def test_private_key_pem_is_refused(tmp_path: Path, rsa_private: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "private.pem"
    path.write_bytes(
        rsa_private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(TokenKeyError, match="private key"):
        parse_token_key(f"@{path}")


def test_garbage_pem_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.pem"
    path.write_text("-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n")
    with pytest.raises(TokenKeyError, match="not a PEM public key"):
        parse_token_key(f"@{path}")


# -- verification -----------------------------------------------------------------------


def test_hs256_token_grants_names_and_globs() -> None:
    claims = verify(parse_token_key(SECRET), hs256({**GRANTS, "sub": "app", "exp": 2e9}))
    assert claims.may_publish("news")
    assert claims.may_publish("room.42")
    assert not claims.may_publish("room")
    assert not claims.may_publish("newsroom")
    assert not claims.may_publish("News")  # case matters
    assert claims.may_subscribe("whatever/at:all")
    assert claims.expires == 2e9 and claims.subject == "app"


def test_rs256_token_verifies(rsa_private: rsa.RSAPrivateKey, rsa_pem_file: Path) -> None:
    token = jwt.encode({"sse": {"publish": ["*"]}}, rsa_private, algorithm="RS256")
    claims = verify(parse_token_key(f"@{rsa_pem_file}"), token)
    assert claims.may_publish("x") and not claims.may_subscribe("x")
    assert claims.expires is None


def test_expired_token_is_refused_after_leeway() -> None:
    key = parse_token_key(SECRET)
    now = time.time()
    with pytest.raises(TokenError, match="token expired"):
        verify(key, hs256({**GRANTS, "exp": int(now) - 60}))
    token = hs256({**GRANTS, "exp": 1000})
    assert verify(key, token, now=1000 + LEEWAY).expires == 1000.0
    with pytest.raises(TokenError, match="expired"):
        verify(key, token, now=1000 + LEEWAY + 1)


def test_not_before_is_checked() -> None:
    token = hs256({**GRANTS, "nbf": 5000})
    with pytest.raises(TokenError, match="not yet valid"):
        verify(parse_token_key(SECRET), token, now=4000)
    assert verify(parse_token_key(SECRET), token, now=5000).may_publish("news")


def test_wrong_key_is_bad_signature(rsa_pem_file: Path) -> None:
    with pytest.raises(TokenError) as info:
        verify(parse_token_key("t" * 40), hs256(GRANTS))
    assert info.value.reason == "bad signature"


def test_alg_confusion_hmac_with_public_key_pem_fails(rsa_pem_file: Path) -> None:
    # An attacker signs HS256 with the (public) PEM text as the HMAC secret. PyJWT refuses
    # to *make* such a token, so it is built by hand.
    pem = rsa_pem_file.read_bytes()
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps({"sse": {"publish": ["*"]}}).encode())
    signature = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    token = f"{header}.{body}.{_b64(signature)}"
    with pytest.raises(TokenError, match="algorithm not allowed"):
        verify(parse_token_key(f"@{rsa_pem_file}"), token)


def test_alg_none_is_refused() -> None:
    token = jwt.encode(GRANTS, None, algorithm="none")
    with pytest.raises(TokenError, match="algorithm not allowed"):
        verify(parse_token_key(SECRET), token)
    # Also with a forged empty signature on a "none" header.
    header = _b64(json.dumps({"alg": "none"}).encode())
    body = _b64(json.dumps(GRANTS).encode())
    with pytest.raises(TokenError):
        verify(parse_token_key(SECRET), f"{header}.{body}.")


def test_hs512_token_is_refused_for_an_hs256_key() -> None:
    secret = "k" * 64
    token = jwt.encode(GRANTS, secret, algorithm="HS512")
    with pytest.raises(TokenError, match="algorithm not allowed"):
        verify(parse_token_key(secret), token)


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b.c", "a.b", "....", "x" * 10000, "\udcff.\udcff.\udcff"]
)
def test_malformed_tokens_are_token_errors(token: str) -> None:
    with pytest.raises(TokenError) as info:
        verify(parse_token_key(SECRET), token)
    assert info.value.reason in ("malformed token", "invalid token")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({}, "missing claim 'sse'"),
        ({"sse": ["publish"]}, "malformed claim 'sse'"),
        ({"sse": {"publish": "news"}}, "malformed claim sse.publish"),
        ({"sse": {"subscribe": [1]}}, "malformed claim sse.subscribe"),
        ({"sse": {}, "exp": "tomorrow"}, "malformed claim 'exp'"),
        ({"sse": {}, "exp": True}, "malformed claim 'exp'"),
    ],
)
def test_bad_claims_have_reasons(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(TokenError) as info:
        verify(parse_token_key(SECRET), hs256(payload))
    assert info.value.reason == reason


def test_empty_grants_allow_nothing() -> None:
    claims = verify(parse_token_key(SECRET), hs256({"sse": {}}))
    assert claims == Claims()
    assert not claims.may_publish("*") and not claims.may_subscribe("")


# -- finding a token ---------------------------------------------------------------------


def test_token_from_bearer_header_first() -> None:
    vars = {
        "HTTP_AUTHORIZATION": "Bearer aaa.bbb.ccc",
        "HTTP_COOKIE": "sseAuthorization=cookie",
        "QUERY_STRING": "authorization=query",
    }
    assert token_from_request(vars) == "aaa.bbb.ccc"
    assert token_from_request({"HTTP_AUTHORIZATION": "bearer   t1 "}) == "t1"


def test_token_from_cookie_then_query() -> None:
    assert token_from_request(
        {"HTTP_AUTHORIZATION": "Basic dTpw", "HTTP_COOKIE": "a=1; sseAuthorization=ck"}
    ) == "ck"
    assert token_from_request({"HTTP_COOKIE": "a=1, sseAuthorization=\"q\""}) == "q"
    assert token_from_request({"QUERY_STRING": "x=1&authorization=qq"}) == "qq"
    assert token_from_request({"QUERY_STRING": "x=1&authorization="}) is None
    assert token_from_request({"HTTP_COOKIE": "ssEAuthorization=no"}) is None
    assert token_from_request({}) is None


def test_query_with_too_many_fields_gives_no_token() -> None:
    assert token_from_request({"QUERY_STRING": "a&" * 500 + "authorization=x"}) is None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
