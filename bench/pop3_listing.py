"""Issue 9 #2: what remembering POP3 mail by its header digest costs, with and without pipelined TOP.

    .venv/bin/python bench/pop3_listing.py                     # 500 messages, 20 ms round trip
    .venv/bin/python bench/pop3_listing.py --messages 1000 --rtt-ms 50

A loopback Dovecot (POP3S) holds ``--messages`` small invoice mails. Between it and the importer sits a TCP relay
that holds every chunk for half the round trip in each direction, as a server across the internet would. The
POP3 adapter lists the mailbox (UIDL, LIST, then TOP n 0 of every message) twice: with PIPELINING as Dovecot
offers it (64 TOP commands a round trip) and with it switched off (one TOP a round trip, as against a server
without PIPELINING). Each listing runs ``--rounds`` times; the table shows the best.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PASSWORD, USER, MailWorld, machine_summary, make_message, make_pdf, table
from ingest.config import Pop3Account
from ingest.mailbox.pop3 import TOP_BATCH, Pop3Mailbox


class DelayRelay:
    """127.0.0.1:port -> target, each chunk held ``delay`` seconds (one way) before it is passed on."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target, self.delay = target, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                time.sleep(self.delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def listing_seconds(account: Pop3Account, *, pipelining: bool, rounds: int) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(rounds):
        with Pop3Mailbox(account, lambda _name: PASSWORD) as mailbox:
            offered = mailbox._pipelining
            mailbox._pipelining = pipelining and offered
            started = time.perf_counter()
            count = len(list(mailbox.list_messages()))
            best = min(best, time.perf_counter() - started)
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with MailWorld() as world:
        pdf = make_pdf(1, 2_000)
        world.seed(make_message(n, pdf, f"invoice-{n}.pdf") for n in range(args.messages))
        relay = DelayRelay(("127.0.0.1", world.dovecot.ports["pop3s"]), args.rtt_ms / 2000)
        account = Pop3Account.model_validate(
            {
                "name": "bench",
                "type": "pop3",
                "host": "127.0.0.1",
                "port": relay.port,
                "security": "ssl",
                "username": USER,
                "password_secret": "pw",
                "ca_file": str(world.ca.ca_cert),
                "timeout_seconds": 120,
            }
        )
        rows = []
        for label, pipelining in ((f"pipelined, {TOP_BATCH} TOP a round trip", True), ("one TOP a round trip", False)):
            seconds, count = listing_seconds(account, pipelining=pipelining, rounds=args.rounds)
            rows.append((label, count, f"{seconds:.2f} s", f"{seconds / count * 1000:.1f} ms"))
        relay.close()
    print(machine_summary())
    print(f"POP3 listing (UIDL, LIST, TOP n 0 of each) through a relay adding {args.rtt_ms:g} ms a round trip")
    print(table(["listing", "messages", "time", "per message"], rows))


if __name__ == "__main__":
    main()
