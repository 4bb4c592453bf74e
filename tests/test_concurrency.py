"""Many clients over several worker threads: shared-store operations stay exact."""

from __future__ import annotations

import threading
from contextlib import closing

from pymemcache.client.base import Client

from procs import ServerProcess

THREADS = 12
ROUNDS = 300


def _run_clients(server: ServerProcess, body: "callable[[Client], None]") -> None:  # type: ignore[valid-type]
    errors: list[BaseException] = []

    def worker() -> None:
        client = Client(("127.0.0.1", server.port), default_noreply=False, timeout=10)
        try:
            body(client)
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


def test_concurrent_incr_is_exact(server: ServerProcess) -> None:
    with closing(Client(("127.0.0.1", server.port), default_noreply=False)) as client:
        client.set("counter", b"0")
        _run_clients(server, lambda c: [c.incr("counter", 1) for _ in range(ROUNDS)])
        assert client.get("counter") == b"%d" % (THREADS * ROUNDS)


def test_concurrent_cas_loops_are_exact(server: ServerProcess) -> None:
    with closing(Client(("127.0.0.1", server.port), default_noreply=False)) as client:
        client.set("casv", b"0")

    def body(client: Client) -> None:
        for _ in range(ROUNDS // 3):
            for _attempt in range(10_000):
                value, cas = client.gets("casv")
                if client.cas("casv", b"%d" % (int(value) + 1), cas):
                    break
            else:
                raise AssertionError("cas never succeeded")

        _run_clients(server, body)
        assert client.get("casv") == b"%d" % (THREADS * (ROUNDS // 3))
