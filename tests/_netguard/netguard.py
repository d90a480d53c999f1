"""Socket guard for the test suite: any connection that leaves this machine is refused and recorded.

Installed in the pytest process by conftest.py and, through the `sitecustomize.py` beside this
file on PYTHONPATH, in every Python subprocess a test starts (kofin CLI runs, axolotl, servers).
A refused attempt raises OSError where it happens (so a hidden hub download fails loudly) and is
appended to the file named by KOFIN_NETGUARD_REPORT, which conftest checks after every test: a
library that swallows the error still fails the test.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import traceback

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}
_installed = False


class NetworkBlocked(OSError):
    pass


def is_local(host: object) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths (bytes/str handled below) and odd families are not network
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False  # a hostname other than localhost would need DNS: not allowed
    return addr.is_loopback or addr.is_unspecified


def _record(what: str) -> None:
    path = os.environ.get("KOFIN_NETGUARD_REPORT")
    stack = "".join(traceback.format_stack(limit=8)[:-2])
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"pid {os.getpid()}: {what}\n{stack}\n---\n")


def _check_address(sock: socket.socket, address: object) -> None:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return
    host = address[0] if isinstance(address, tuple) and address else address
    if not is_local(host):
        what = f"blocked connection to {address!r}"
        _record(what)
        raise NetworkBlocked(f"kofin test network guard: {what} (tests must stay on 127.0.0.1)")


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        _check_address(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check_address(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not is_local(name):
            what = f"blocked DNS lookup of {name!r}"
            _record(what)
            raise NetworkBlocked(f"kofin test network guard: {what} (tests must stay on 127.0.0.1)")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
