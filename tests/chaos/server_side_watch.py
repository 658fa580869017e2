"""What the servers under a hostile scenario hold, read from /proc: their processes' memory and open files, nginx's
worker processes, and the kernel's view of the server's end of one loopback connection, watched until the server
closes it. Only readings here; the scenarios decide what is too much."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path


# ------------------------------------------------------------------------------------------------------------
# /proc readings of processes


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def total_rss_kib(pids: list[int]) -> int:
    return sum(rss_kib(pid) for pid in pids)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def total_open_fds(pids: list[int]) -> int:
    return sum(open_fds(pid) for pid in pids)


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (nginx's workers), from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


# /proc/net/tcp's state codes.
TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def server_side_state(server_port: int, client: tuple[str, int]) -> str:
    """The state of the server's end of the loopback connection from `client` to 127.0.0.1:`server_port`
    ("GONE" when the kernel no longer has it): it leaves ESTABLISHED as soon as the server closes its side, even
    while unsent data still waits for the client's window."""
    local = f"0100007F:{server_port:04X}"
    octets = client[0].split(".")
    remote = "".join(f"{int(octet):02X}" for octet in reversed(octets)) + f":{client[1]:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return TCP_STATES.get(fields[3], fields[3])
    return "GONE"


# ------------------------------------------------------------------------------------------------------------
# Connections the client stops reading


@dataclass
class ServerSideClose:
    """How long the server's end of one connection stayed ESTABLISHED, and the peak memory of the watched
    processes meanwhile."""

    state: str
    # None when it was still ESTABLISHED after `bound_s`.
    closed_after_s: float | None
    peak_rss_kib: int
    bound_s: float

    def summary(self) -> str:
        if self.closed_after_s is None:
            return f"server side {self.state} after {self.bound_s:.0f}s (not closed)"
        return f"server side {self.state} after {self.closed_after_s:.1f}s"


def watch_until_server_closes(server_port: int, client: tuple[str, int], bound_s: float,
                              pids: list[int], rss_before_kib: int) -> ServerSideClose:
    """Polls every half second, for at most `bound_s`, until the server's end of the connection from `client`
    leaves ESTABLISHED, and the total memory of `pids` meanwhile (from `rss_before_kib` up)."""
    opened = time.monotonic()
    watch = ServerSideClose("ESTABLISHED", None, rss_before_kib, bound_s)
    while time.monotonic() - opened < bound_s:
        watch.peak_rss_kib = max(watch.peak_rss_kib, total_rss_kib(pids))
        watch.state = server_side_state(server_port, client)
        if watch.state != "ESTABLISHED":
            watch.closed_after_s = time.monotonic() - opened
            break
        time.sleep(0.5)
    return watch


def read_until_end(connection: socket.socket, bound_s: float = 30.0) -> tuple[bytes, bool]:
    """Reads everything the server sent until it ends the connection (EOF or a reset), 3 s pass with nothing to
    read, or `bound_s` passes; returns (the bytes, whether the server ended the connection)."""
    received, ended = b"", False
    connection.settimeout(3.0)
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        try:
            chunk = connection.recv(1 << 20)
        except TimeoutError:
            break
        except OSError:
            ended = True
            break
        if not chunk:
            ended = True
            break
        received += chunk
    return received, ended
