"""AWS Signature Version 4: check a request's signature against a known secret.

Only what the SDKs send is accepted: the `Authorization` header form (no presigned
query strings), HMAC-SHA256, a request time within 15 minutes of ours.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from gateway.aws.errors import AwsError

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_S = 15 * 60
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request,\s*"
    r"SignedHeaders=([a-z0-9;_.-]+),\s*Signature=([0-9a-f]{64})\s*"
)


@dataclass(frozen=True, slots=True)
class Signed:
    """The parts of a signed request's `Authorization` header."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse(authorization: str | None) -> Signed:
    """The access key and scope of a request, or AWS's error for a missing/bad header."""
    if not authorization:
        raise AwsError("MissingAuthenticationToken", "Request is missing Authentication Token", 403)
    m = _AUTH.fullmatch(authorization.strip())
    if m is None:
        raise AwsError(
            "IncompleteSignature", "Authorization header requires AWS4-HMAC-SHA256.", 403
        )
    key, date, region, service, headers, signature = m.groups()
    return Signed(key, date, region, service, tuple(headers.split(";")), signature)


def _key(secret: str, date: str, region: str, service: str) -> bytes:
    k = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def _canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def verify(
    signed: Signed,
    secret: str,
    *,
    method: str,
    path: str,
    query: str,
    headers: Sequence[tuple[str, str]] | Mapping[str, str],
    body: bytes,
    now: float | None = None,
) -> None:
    """Raise `SignatureDoesNotMatch` unless `signed.signature` signs this request."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    by_name: dict[str, list[str]] = {}
    for name, value in items:
        by_name.setdefault(name.lower(), []).append(" ".join(value.split()))
    amz_date = (by_name.get("x-amz-date") or [""])[0]
    try:
        stamp = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise AwsError(
            "IncompleteSignature", "X-Amz-Date must be given as YYYYMMDD'T'HHMMSS'Z'.", 403
        ) from None
    if abs((time.time() if now is None else now) - stamp) > MAX_SKEW_S:
        raise AwsError(
            "SignatureDoesNotMatch", "Signature expired: the request time is too skewed.", 403
        )
    if "host" not in signed.signed_headers or amz_date[:8] != signed.date:
        raise AwsError("SignatureDoesNotMatch", "The host header must be signed.", 403)
    canonical_headers = "".join(
        f"{h}:{','.join(by_name.get(h, []))}\n" for h in signed.signed_headers
    )
    canonical = "\n".join(
        [
            method,
            quote(path or "/", safe="/-_.~"),
            _canonical_query(query),
            canonical_headers,
            ";".join(signed.signed_headers),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{signed.date}/{signed.region}/{signed.service}/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _key(secret, signed.date, signed.region, signed.service)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signed.signature):
        raise AwsError(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
            403,
        )
