"""
Key erasure through the real C{twistd -n gatehouse} daemon in front of a
real PostgreSQL: leftover copies of an expired key do not keep it from
starting, every copy is erased, and a key is erased at the end of its
window on the wall clock, not at the next re-read of the directory.
"""

from __future__ import annotations

import os
import time

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.recording import keys as gkeys
from tests.fixtures.postgres import shared_cluster
from tests.protocols.postgres.harness import GATEWAY_ID, Gateway

NS = 1_000_000_000
#: the short key's window ends this long after the daemon is told to start
SHORT_WINDOW_LEFT = 5.0


class KeyErasureDaemonTests(SynchronousTestCase):
    """The daemon with leftovers in its signing-key directory."""

    def write(self, path: str, data: bytes) -> str:
        with open(path, "wb") as f:
            f.write(data)
        return path

    def psql_ok(self, gateway: Gateway) -> None:
        result = gateway.psql("SELECT 'served' AS answer")
        self.assertEqual(
            result.returncode, 0, f"{result.stderr}\n{gateway.log()[-3000:]}"
        )
        self.assertIn("served", result.stdout)

    def test_leftovers_erased_and_served(self) -> None:
        """
        With an expired key under its own name, a second C{*.epochkey} copy
        and a C{.bak} copy, and a note that is not key material: the daemon
        starts, listens and serves psql; all three copies are gone, the note
        is left and warned about once.  A key whose window ends a few
        seconds later (with a C{~} copy) is on disk until the end of its
        window and gone within 0.5 s of it, well before the 30 s re-read.
        """
        gateway = Gateway(self.mktemp(), shared_cluster())
        signing = gateway.path("signing")
        root = gkeys.load_root_private(gateway.path("root.key"))
        now = time.time_ns()
        [expired] = gkeys.issue_epoch_keys(
            root, GATEWAY_ID, now - 2 * 3600 * NS, 1800 * NS, 1
        )
        [short] = gkeys.issue_epoch_keys(
            root,
            GATEWAY_ID,
            now - 10 * NS,
            10 * NS + int(SHORT_WINDOW_LEFT * NS),
            1,
        )
        gkeys.KeyDirectory(signing).add([expired, short])
        leftovers = [
            os.path.join(signing, expired.filename()),
            self.write(os.path.join(signing, "second.epochkey"), expired.to_json()),
            self.write(
                os.path.join(signing, expired.filename() + ".bak"), expired.to_json()
            ),
        ]
        short_copies = [
            os.path.join(signing, short.filename()),
            self.write(os.path.join(signing, short.filename() + "~"), short.to_json()),
        ]
        note = self.write(os.path.join(signing, "README"), b"keys for gw-1\n")

        gateway.start()
        self.addCleanup(gateway.stop)
        started = time.time()
        self.assertLess(
            started,
            short.certificate.not_after / NS - 1,
            "the daemon took too long to start for the timing check",
        )
        self.psql_ok(gateway)
        self.assertEqual([p for p in leftovers if os.path.lexists(p)], [])
        self.assertTrue(os.path.exists(note))
        log = gateway.log()
        self.assertNotIn("Traceback", log)
        self.assertEqual(log.count("Not key material"), 1, log[-3000:])
        self.assertIn("README", log)

        # The short key: present until its window ends, then gone at once.
        end = short.certificate.not_after / NS
        while time.time() < end - 0.3:
            self.assertEqual(
                [p for p in short_copies if not os.path.exists(p)],
                [],
                "erased before the end of its window",
            )
            time.sleep(0.05)
        while any(os.path.lexists(p) for p in short_copies):
            late = time.time() - end
            self.assertLess(late, 0.5, f"still on disk {late:.2f} s after its end")
            time.sleep(0.01)
        self.psql_ok(gateway)
        log = gateway.log()
        self.assertEqual(log.count("Not key material"), 1)
        self.assertNotIn("Traceback", log)
        self.assertIsNone(gateway.process.poll())
