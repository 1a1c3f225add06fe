"""
Checks beyond the file itself: that the TLS files are usable now, that
the environment variables the targets name are set, that the signing
keys can sign.
"""

from __future__ import annotations

import time

from gatehouse.config.section import Problem, _format_duration
from gatehouse.config.values import GatehouseConfig


def tls_problems(certificate: str, key: str) -> list[tuple[str, str]]:
    """
    Check a PEM certificate chain and private key the way the TLS server
    will use them: both parse, the key is not encrypted, the first
    certificate (the leaf) is for that key, and it is valid now.

    @return: (key, message) per problem; C{key} is C{certificate} or C{key}.
    """
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    problems: list[tuple[str, str]] = []
    with open(certificate, "rb") as f:
        pem = f.read()
    leaf = None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        problems.append(("certificate", f"{certificate} holds no PEM certificate"))
    else:
        try:
            leaf = x509.load_pem_x509_certificates(pem)[0]
        except ValueError:
            problems.append(
                (
                    "certificate",
                    f"{certificate} is not a valid PEM certificate: its contents "
                    "do not parse as X.509",
                )
            )
    with open(key, "rb") as f:
        key_pem = f.read()
    private = None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        problems.append(
            ("key", f"{key} is encrypted; the gateway needs it unencrypted")
        )
    except (ValueError, UnsupportedAlgorithm):
        problems.append(
            ("key", f"{key} is not a valid PEM private key (or not a supported type)")
        )
    if leaf is None:
        return problems
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc <= now:
        problems.append(
            (
                "certificate",
                f"{certificate} expired on "
                f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
            )
        )
    elif leaf.not_valid_before_utc > now:
        problems.append(
            (
                "certificate",
                f"{certificate} is not valid before "
                f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
            )
        )
    if private is not None:
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        leaf_public = leaf.public_key().public_bytes(der, spki)
        if leaf_public != private.public_key().public_bytes(der, spki):
            problems.append(
                ("key", f"{key} does not match the certificate in {certificate}")
            )
    return problems


# Checks of the environment the configuration runs in


def environment_problems(config: GatehouseConfig) -> list[Problem]:
    """
    Report every environment variable a target's options name that is not
    set in this process (L{TargetOptions.environment_problems}: a
    PostgreSQL target's C{password_env}).

    Separate from L{load_config}: the answer depends on the process
    environment, so C{gatehouse check-config} and the daemon (start and
    reload) ask it of their own environment.
    """
    problems = []
    for n, target in enumerate(config.targets):
        if target.options is None:
            continue
        for key, message in target.options.environment_problems():
            problems.append(
                Problem(config.path, f"targets[{n}].options.{key}", message)
            )
    return problems


def signing_key_problems(
    config: GatehouseConfig, now: float
) -> tuple[list[Problem], list[Problem]]:
    """
    Check that the signing keys (C{recording.signing_keys}) can sign now and
    for how long: no key valid at C{now} is an error (sessions would be
    refused), and coverage ending within C{recording.key_warning} is a
    warning.  Nothing is written (expired keys are not erased).

    @return: (errors, warnings).
    """
    from gatehouse.recording.keys import NS, KeyDirectory, covered_until

    recording = config.recording
    where = "recording.signing_keys"
    keys, read_problems = KeyDirectory(recording.signing_keys).load()
    errors = [Problem(config.path, where, p) for p in read_problems]
    now_ns = int(now * NS)
    mine = []
    for key in keys:
        if key.certificate.gateway_id != config.gateway.id:
            errors.append(
                Problem(
                    config.path,
                    where,
                    f"key {key.filename()} was issued for gateway "
                    f"{key.certificate.gateway_id!r}, not {config.gateway.id!r}",
                )
            )
        elif key.certificate.not_after > now_ns:
            mine.append(key)
    end = covered_until(mine, now_ns)
    warnings = []
    if end <= now_ns:
        later = [k for k in mine if k.certificate.not_before > now_ns]
        detail = (
            "the next one starts at "
            + time.strftime(
                "%Y-%m-%d %H:%M:%S UTC",
                time.gmtime(later[0].certificate.not_before // NS),
            )
            if later
            else "issue keys with `gatehouse keys issue`"
        )
        errors.append(
            Problem(
                config.path,
                where,
                f"no signing key in {recording.signing_keys} is valid now "
                f"(sessions would be refused); {detail}",
            )
        )
    elif (left := (end - now_ns) / NS) < recording.key_warning:
        warnings.append(
            Problem(
                config.path,
                where,
                f"signing keys run out in {_format_duration(round(left))}; "
                "issue more with `gatehouse keys issue`",
            )
        )
    return errors, warnings
