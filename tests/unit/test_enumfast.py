"""ops/enumfast.py: enum members read without EnumType.__getattr__ (each case in a fresh
interpreter: removing the method is process-wide)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.fresh import run_fresh

pytestmark = pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 has no EnumType.__getattr__")


def run(code: str, tmp_path: Path) -> str:
    return run_fresh(code, tmp_path)


def test_every_enum_of_the_stack_keeps_its_members_in_its_class_dict(tmp_path: Path) -> None:
    # The claim the removal rests on, for every enum both ends define or import.
    out = run(
        """
        import ptproxy.ops.app, ptproxy.client.listener, ptproxy.server.origin, ptproxy.ops.config
        import aioquic.quic.connection, aioquic.h3.connection, aioquic.tls
        from ptproxy.ops.enumfast import _enum_classes, members_in_class_dicts
        print(members_in_class_dicts(), len(list(_enum_classes())) > 40)
        """,
        tmp_path,
    )
    assert out.split() == ["True", "True"]


def test_members_aliases_and_clashing_names_still_read_after_the_removal(tmp_path: Path) -> None:
    out = run(
        """
        import enum
        from aioquic import tls
        from ptproxy.ops.enumfast import drop_enum_getattr
        print(drop_enum_getattr(), "__getattr__" in enum.EnumType.__dict__)

        class Kind(enum.Enum):  # defined after the removal
            A = 1
            ALIAS = 1
            name = 2  # clashes with Enum's own 'name' property: a redirect in the class dict
            value = 3

        assert Kind.A is Kind.ALIAS is Kind(1) and Kind["ALIAS"] is Kind.A
        assert Kind.name is Kind(2) and Kind.value is Kind(3) and Kind.A.name == "A"
        assert tls.Epoch.ONE_RTT.value == 3 and list(Kind) == [Kind.A, Kind.name, Kind.value]
        try:
            Kind.MISSING
        except AttributeError:
            print("missing raises")
        print(drop_enum_getattr())  # again: already gone
        """,
        tmp_path,
    )
    assert out.split("\n")[:3] == ["True False", "missing raises", "True"]


def test_an_enum_whose_member_left_its_class_dict_keeps_the_method(tmp_path: Path) -> None:
    out = run(
        """
        import enum
        from ptproxy.ops.enumfast import drop_enum_getattr

        class Odd(enum.Enum):
            A = 1
        type.__delattr__(Odd, "A")  # past EnumType.__delattr__: reachable only through EnumType.__getattr__ now
        print(drop_enum_getattr(), Odd.A is Odd(1))
        """,
        tmp_path,
    )
    assert out.split() == ["False", "True"]


def test_python_m_ptproxy_removes_it(tmp_path: Path) -> None:
    # The entry point calls it first thing; --version exits right after parsing.
    out = run(
        """
        import enum, sys
        from ptproxy.ops import cli
        sys.argv = ["ptproxy", "--version"]
        try:
            cli.main(["--version"])
        except SystemExit:
            pass
        print("__getattr__" in enum.EnumType.__dict__)
        """,
        tmp_path,
    )
    assert out.strip().splitlines()[-1] == "False"


# -- identity_enum_hash ----------------------------------------------------------------------------


def test_plain_enums_hash_by_identity_when_switched_before_any_member(tmp_path: Path) -> None:
    out = run(
        """
        import enum
        from ptproxy.ops.enumfast import identity_enum_hash
        print(identity_enum_hash(), identity_enum_hash())  # again: already done

        from aioquic import tls
        from aioquic.quic import connection as qc
        import ptproxy.tunnel.aioquic.connection  # quicrecv.install(): must not put the name hash back
        e = tls.Epoch.ONE_RTT
        print(hash(e) == object.__hash__(e), type(e).__hash__ is object.__hash__)
        d = {tls.Epoch.INITIAL: 0, e: 3}
        print(d[e], d[tls.Epoch(3)], qc.QuicConnectionState.CLOSING in qc.END_STATES)

        class Color(enum.Flag):
            R = 1
            G = 2
        print(Color(3) is (Color.R | Color.G), {Color.R | Color.G: 1}[Color(3)])

        class S(str, enum.Enum):  # a data type: its own hash and equality, unchanged
            X = "x"
        class I(enum.IntEnum):
            Y = 5
        print(hash(S.X) == hash("x"), {"x": 1}[S.X], hash(I.Y) == 5, {5: 1}[I.Y])
        """,
        tmp_path,
    )
    assert out.split("\n")[:5] == ["True True", "True True", "3 3 True", "True 1", "True 1 True 1"]


def test_no_switch_once_a_plain_enum_member_exists(tmp_path: Path) -> None:
    # A container may hold the name hash by now: the hash must stay.
    out = run(
        """
        import enum
        from ptproxy.ops.enumfast import identity_enum_hash

        class Kind(enum.Enum):
            A = 1
        d = {Kind.A: 1}
        print(identity_enum_hash(), "__hash__" in enum.Enum.__dict__ and enum.Enum.__hash__ is not object.__hash__, d[Kind.A])
        """,
        tmp_path,
    )
    assert out.split() == ["False", "True", "1"]


# How ``python -m ptproxy`` starts, and how the ``ptproxy`` console script does (pyproject's entry
# point: the wrapper pip writes imports it and calls it; the Docker image and systemd unit use it).
START = {
    "python -m": 'runpy.run_module("ptproxy", run_name="__main__", alter_sys=True)',
    "console script": "from ptproxy.__main__ import main; sys.exit(main())",
}


@pytest.mark.parametrize("start", sorted(START))
def test_python_m_ptproxy_and_the_script_switch_first(tmp_path: Path, start: str) -> None:
    out = run(
        f"""
        import enum, runpy, sys
        sys.argv = ["ptproxy", "--version"]
        try:
            {START[start]}
        except SystemExit:
            pass
        from aioquic import tls
        print(enum.Enum.__hash__ is object.__hash__, {{tls.Epoch.ONE_RTT: 1}}[tls.Epoch.ONE_RTT])
        """,
        tmp_path,
    )
    assert out.strip().splitlines()[-1] == "True 1"
