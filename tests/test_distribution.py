"""Distributions and the pool's key map: twemproxy's vectors and rules, and properties."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_mc.proxy.distribution import (
    Continuum,
    NoLiveServers,
    hash_tag_key,
    ketama_points,
    modula,
    server_name,
)
from trio_mc.proxy.hashkit import HASHES, new_md5


@dataclass(frozen=True)
class Server:
    name: str
    weight: int = 1


def named(*weights: int) -> list[Server]:
    return [Server(f"server{i + 1}", w) for i, w in enumerate(weights)]


uint32 = st.integers(0, 0xFFFFFFFF)
keys = st.binary(min_size=1, max_size=250)


# -- the server-name rule -------------------------------------------------------------------

@pytest.mark.parametrize(("host", "port", "name", "expected"), [
    ("127.0.0.1", "21211", "server1", "server1"),  # a name wins
    ("127.0.0.1", "11211", "server1", "server1"),
    ("127.0.0.1", "11211", None, "127.0.0.1"),  # libmemcached's rule: no port
    ("localhost", "11211", None, "localhost"),  # the host as written, not resolved
    ("127.0.0.1", "011211", None, "127.0.0.1"),  # the port's value decides ...
    ("127.0.0.1", "021211", None, "127.0.0.1:021211"),  # ... but its text is kept
    ("127.0.0.1", "21211", None, "127.0.0.1:21211"),
    ("/tmp/mc.sock", None, None, "/tmp/mc.sock:"),  # unix socket: path and its colon
    ("/tmp/mc.sock", None, "sock", "sock"),
])
def test_server_name(host: str, port: str | None, name: str | None, expected: str) -> None:
    assert server_name(host, port, name) == expected


# -- ketama ---------------------------------------------------------------------------------

def test_ketama_point_vectors_from_twemproxy() -> None:
    """src/test_all.c: ketama_hash("server1-8", 0 and 3), i.e. words 0 and 3 of its MD5."""
    words = struct.unpack("<4I", new_md5(b"server1-8").digest())
    assert (words[0], words[3]) == (3853726576, 2667054752)
    # Both are points of server1 (its 9th digest): a hash equal to one lands on it.
    continuum = Continuum(named(1, 1), hash="md5")
    assert continuum.dispatch(3853726576) == continuum.dispatch(2667054752) == 0


@pytest.mark.parametrize("n", range(1, 12))
def test_equal_weights_give_160_points(n: int) -> None:
    assert [ketama_points(7, 7 * n, n)] * n == [160] * n


def test_float32_point_counts() -> None:
    """Weights 1, 29, 30: float32 gives 228 points to the middle server, exact arithmetic 232."""
    assert [ketama_points(w, 60, 3) for w in (1, 29, 30)] == [8, 228, 240]
    assert math.floor(Fraction(29, 60) * 40 * 3) * 4 == 232


@given(st.lists(st.integers(1, 1000), min_size=1, max_size=12))
def test_point_counts_stay_within_the_budget(weights: list[int]) -> None:
    counts = [ketama_points(w, sum(weights), len(weights)) for w in weights]
    assert all(c % 4 == 0 and c >= 0 for c in counts)
    assert max(counts) >= 160 and sum(counts) <= 160 * len(weights)


def test_ketama_wraps_past_the_last_point() -> None:
    continuum = Continuum(named(1, 1, 1), hash="md5")
    assert continuum.dispatch(0xFFFFFFFF) == continuum.dispatch(0)


def test_names_longer_than_272_bytes_are_cut() -> None:
    """twemproxy formats "<name>-<i>" into 273 bytes: beyond 272 the name and i are lost."""
    long = Continuum([Server("x" * 300), Server("y" * 300)], hash="md5")
    cut = Continuum([Server("x" * 272 + "a"), Server("y" * 272 + "b")], hash="md5")
    assert all(long.dispatch(h) == cut.dispatch(h) for h in range(0, 1 << 32, 9973 * 4099))


@given(st.permutations(named(1, 2, 3, 5)), st.lists(keys, max_size=20))
def test_ketama_placement_ignores_config_order(servers: list[Server], ks: list[bytes]) -> None:
    """The continuum is made of (name, weight) points, so order only changes indices."""
    base = named(1, 2, 3, 5)
    a, b = Continuum(base, hash="md5"), Continuum(servers, hash="md5")
    assert [base[a.server_for(k)] for k in ks] == [servers[b.server_for(k)] for k in ks]


@given(st.integers(0, 4), st.lists(keys, max_size=30))
def test_ketama_ejection_moves_only_the_ejected_servers_keys(gone: int,
                                                             ks: list[bytes]) -> None:
    """With equal weights every live server keeps its 160 points when one leaves."""
    continuum = Continuum(named(1, 1, 1, 1, 1), hash="murmur")
    before = [continuum.server_for(k) for k in ks]
    continuum.rebuild(i for i in range(5) if i != gone)
    after = [continuum.server_for(k) for k in ks]
    assert gone not in after
    assert all(b == a for a, b in zip(before, after) if a != gone)


# -- modula and random ----------------------------------------------------------------------

@given(st.lists(st.integers(1, 20), min_size=1, max_size=8), st.data())
def test_modula_is_twemproxys_weight_table(weights: list[int], data: st.DataObject) -> None:
    servers = named(*weights)
    live = data.draw(st.lists(st.sampled_from(range(len(weights))), min_size=1, unique=True))
    live.sort()
    table = [i for i in live for _ in range(weights[i])]
    dispatch = modula(servers, live)
    for h in data.draw(st.lists(uint32, max_size=20)) + list(range(len(table) + 1)):
        assert dispatch(h) == table[h % len(table)]


def test_random_picks_every_live_server_and_no_other() -> None:
    continuum = Continuum(named(1, 1, 1, 1), distribution="random")
    continuum.rebuild([0, 2, 3])
    seen = {continuum.server_for(b"same key") for _ in range(300)}
    assert seen == {0, 2, 3}


# -- the key map ----------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "tag", "hashed"), [
    (b"{user1}:profile", b"{}", b"user1"),
    (b"{}x", b"{}", b"{}x"),  # empty tag: the whole key
    (b"{a}{b}", b"{}", b"a"),  # the first tag only
    (b"x{y", b"{}", b"x{y"),  # unclosed
    (b"a}b{c}", b"{}", b"c"),  # a close before the open does not count
    (b"{{a}", b"{}", b"{a"),
    (b"$x$y", b"$$", b"x"),  # the same byte opens and closes
    (b"$$x", b"$$", b"$$x"),
    (b"plain", b"{}", b"plain"),
])
def test_hash_tag_key(key: bytes, tag: bytes, hashed: bytes) -> None:
    assert hash_tag_key(key, tag) == hashed


@given(keys, st.sampled_from([b"{}", b"$$", b"[]", b"::"]))
def test_hash_tag_key_is_the_first_tagged_part(key: bytes, tag: bytes) -> None:
    part = hash_tag_key(key, tag)
    if part == key:  # no non-empty tag: it may lack an opener, or a closer after it
        start = key.find(tag[0])
        assert start < 0 or key.find(tag[1], start + 1) in (-1, start + 1)
    else:
        start = key.index(tag[0])
        assert part and tag[1] not in part
        assert key[start:start + len(part) + 2] == tag[:1] + part + tag[1:]


@given(keys.map(lambda k: k.translate(None, b"{}")).filter(bool))
def test_server_for_hashes_the_tag(key: bytes) -> None:
    """Whatever surrounds a tag (without braces of its own), the tagged part decides."""
    continuum = Continuum(named(1, 1, 1), hash_tag=b"{}")
    assert continuum.server_for(b"a{" + key + b"}z") == continuum.server_for(b"{" + key + b"}")


@given(st.sampled_from(sorted(HASHES)), st.sampled_from(["ketama", "modula"]), keys)
def test_server_for_is_hash_then_dispatch(hash: str, distribution: str, key: bytes) -> None:
    continuum = Continuum(named(3, 1, 2), hash=hash, distribution=distribution)
    assert continuum.server_for(key) == continuum.dispatch(HASHES[hash](key))


def test_empty_key_hashes_to_zero() -> None:
    continuum = Continuum(named(1, 1, 1), hash="fnv1a_64")  # fnv1a_64(b"") is not 0
    assert continuum.server_for(b"") == continuum.dispatch(0)


@pytest.mark.parametrize("distribution", ["ketama", "modula", "random"])
def test_one_server_takes_every_key(distribution: str) -> None:
    continuum = Continuum([Server("only", 5)], distribution=distribution)
    assert {continuum.server_for(b"k%d" % i) for i in range(50)} == {0}


@pytest.mark.parametrize("distribution", ["ketama", "modula", "random"])
def test_no_live_server(distribution: str) -> None:
    continuum = Continuum(named(1, 1), distribution=distribution)
    continuum.rebuild([])
    with pytest.raises(NoLiveServers):
        continuum.server_for(b"key")
    continuum.rebuild([1])
    assert continuum.server_for(b"key") == 1
    assert continuum.live == (1,)


def test_rebuild_rejects_unknown_servers() -> None:
    continuum = Continuum(named(1, 1))
    with pytest.raises(IndexError):
        continuum.rebuild([0, 2])


@pytest.mark.parametrize("kwargs", [
    {"hash": "fnv1a"}, {"distribution": "vnode"}, {"hash_tag": b"{"}, {"hash_tag": b"{}}"},
])
def test_bad_settings_are_refused(kwargs: dict[str, str | bytes]) -> None:
    with pytest.raises(ValueError):
        Continuum(named(1), **kwargs)  # type: ignore[arg-type]


def test_a_pool_needs_servers() -> None:
    with pytest.raises(ValueError):
        Continuum([])
