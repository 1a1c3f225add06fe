"""
Tests for the startup allow-list and client encodings of
L{gatehouse.protocols.postgres.upstream}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.postgres.upstream import (
    StartupRefused,
    client_encoding,
    upstream_parameters,
)


class UpstreamParametersTests(SynchronousTestCase):
    """What a client's StartupMessage may carry to the target."""

    def test_allowed_pass(self) -> None:
        given = (
            ("user", "alice"),
            ("database", "app"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "3"),
            ("options", "-c search_path=a\\ b --statement-timeout=5s -cwork_mem=4MB"),
            ("_pq_.something", "x"),
        )
        self.assertEqual(upstream_parameters(given), given[2:8])

    def test_refused(self) -> None:
        for name, value in [
            ("role", "postgres"),
            ("session_authorization", "postgres"),
            ("standard_conforming_strings", "off"),
            ("client_encoding", "SJIS"),
            ("client_encoding", "big-5"),
            ("client_encoding", "EUC_TW"),
            ("client_encoding", "MULE_INTERNAL"),
            ("options", "-c role=postgres"),
            ("options", "-c application_name=x\\ -c\\ role=y -c role=z"),
            ("options", "--session_authorization=postgres"),
            ("options", "-c client_encoding=GBK"),
            ("options", "-c standard_conforming_strings=off"),
            ("options", "-d 5"),
            ("options", "-c search_path"),
            ("options", "trailing\\"),
            ("log_statement", "none"),
        ]:
            with self.assertRaises(StartupRefused, msg=f"{name}={value}"):
                upstream_parameters(((name, value),))

    def test_client_encodings(self) -> None:
        """Every safe encoding (and alias) reads as the server does."""
        for name, codec in [
            ("UTF8", "utf-8"),
            ("unicode", "utf-8"),
            ("SQL_ASCII", "utf-8"),
            ("LATIN1", "iso8859-1"),
            ("latin9", "iso8859-15"),
            ("ISO_8859_5", "iso8859-5"),
            ("ISO-8859-15", "iso8859-15"),
            ("WIN1252", "cp1252"),
            ("KOI8R", "koi8-r"),
            ("EUC_JP", "euc_jp"),
            ("EUC_KR", "euc_kr"),
            ("EUC_CN", "gb2312"),
            ("EUC_JIS_2004", "euc_jis_2004"),
        ]:
            self.assertEqual(client_encoding(name), codec, name)
        for unsafe in [
            "SJIS",
            "SHIFT_JIS_2004",
            "BIG5",
            "GBK",
            "GB18030",
            "UHC",
            "JOHAB",
            "Windows932",
            "WIN950",
            "EUC_TW",
            "MULE_INTERNAL",
        ]:
            self.assertIsNone(client_encoding(unsafe), unsafe)
