"""Tear-down of what a real node leaves in the kernel and on disk when its processes stop:
iptables chains (kube-proxy's KUBE-*, the CNI portmap's for this network), pod sandboxes
and their shims, mounts under the node's directories, cgroups under its cgroup root and
the bridge. The decisions are pure functions of what the host reports (table-tested);
`Host` runs the commands.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# iptables front ends: kube-proxy programs IPv4 and IPv6 (it runs dual-stack whenever the
# host has IPv6), through whichever backend the host's iptables uses.
IPTABLES = ("iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy")


def _is_ours(chain: str, network: str, rules: list[str]) -> bool:
    if chain.startswith("KUBE-"):
        return True
    # The portmap plugin's per-container chains name the network in their comments.
    return chain.startswith("CNI-") and chain not in ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SNAT",
                                                     "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ") \
        and any(network in r for r in rules)  # fmt: skip


def iptables_cleanup(save: str, network: str) -> list[list[str]]:
    """Arguments for `iptables` that remove the node's chains from an `iptables-save` dump:
    first every rule that jumps to one of them from another chain, then flush and delete
    them. Rules in chains that are not ours stay untouched."""
    table = ""
    chains: dict[str, dict[str, list[str]]] = {}
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            chains.setdefault(table, {})
        elif line.startswith(":") and table:
            chains[table].setdefault(line[1:].split()[0], [])
        elif line.startswith("-A ") and table:
            chain = line.split()[1]
            chains[table].setdefault(chain, []).append(line)
    out: list[list[str]] = []
    for table, by_chain in chains.items():
        ours = {c for c, rules in by_chain.items() if _is_ours(c, network, rules)}
        if not ours:
            continue
        for chain, rules in by_chain.items():
            if chain in ours:
                continue
            for rule in rules:
                words = shlex.split(rule)
                target = words[words.index("-j") + 1] if "-j" in words else ""
                if target in ours or (network in rule and chain.startswith("CNI-")):
                    out.append(["-t", table, "-D", *words[1:]])
        out += [["-t", table, "-F", c] for c in sorted(ours)]
        out += [["-t", table, "-X", c] for c in sorted(ours)]
    return out


def mounts_under(mountinfo: str, roots: Iterable[Path]) -> list[str]:
    """Mount points at or below any of `roots`, deepest first (unmount order)."""
    prefixes = [str(r).rstrip("/") for r in roots]
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].encode().decode("unicode_escape")  # \040 for spaces
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def cgroup_dirs(cgroup_mounts: Iterable[Path], cgroup_root: str) -> list[Path]:
    """The node's cgroup root in every mounted hierarchy (v1 controllers)."""
    return [m / cgroup_root.strip("/") for m in cgroup_mounts]


def is_our_shim(cmdline: list[str], socket: Path) -> bool:
    """A containerd shim started by this node's containerd (its -address is our socket)."""
    if not cmdline or not os.path.basename(cmdline[0]).startswith("containerd-shim"):
        return False
    return str(socket) in cmdline


@dataclass
class Host:
    """Runs the tear-down commands; each step keeps going after an error and reports it."""

    errors: list[str]

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            self.errors.append(f"{' '.join(argv)}: {e}")
            return None

    def remove_iptables(self, network: str) -> int:
        removed = 0
        for tool in IPTABLES:
            if shutil.which(tool) is None or shutil.which(f"{tool}-save") is None:
                continue
            saved = self.run([f"{tool}-save"])
            if saved is None or saved.returncode != 0:
                continue
            for args in iptables_cleanup(saved.stdout, network):
                r = self.run([tool, "-w", "5", *args])
                if r is not None and r.returncode != 0 and "-D" not in args:
                    self.errors.append(f"{tool} {' '.join(args)}: {r.stderr.strip()}")
                removed += 1
        return removed

    def kill_shims(self, socket: Path) -> int:
        killed = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if is_our_shim(cmdline, socket):
                # The shim's children (the containers) die with it (it is their subreaper
                # and runc sets PDEATHSIG); the cgroup sweep below catches any left.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)
                    killed += 1
        return killed

    def unmount(self, roots: Iterable[Path]) -> int:
        points = mounts_under(Path("/proc/self/mountinfo").read_text(), roots)
        for point in points:
            r = self.run(["umount", "--lazy", point])
            if r is not None and r.returncode != 0:
                self.errors.append(f"umount {point}: {r.stderr.strip()}")
        return len(points)

    def remove_cgroups(self, cgroup_root: str, timeout: float = 10.0) -> int:
        """Remove the node's cgroup root in every hierarchy, deepest groups first, killing
        what is still inside (a container whose shim died); a killed process leaves its
        group a moment later, so this sweeps until the groups are gone or `timeout`."""
        base = Path("/sys/fs/cgroup")
        mounts = [p for p in base.iterdir() if p.is_dir() and not p.is_symlink()]
        tops = [t for t in cgroup_dirs(mounts, cgroup_root) if t.is_dir()]
        deadline = time.monotonic() + timeout
        while True:
            left = []
            for top in tops:
                groups = sorted(
                    (p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
                )
                for d in [*groups, top]:
                    self._kill_procs(d)
                    with contextlib.suppress(OSError):
                        d.rmdir()
                if top.is_dir():
                    left.append(top)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.errors += [f"cgroup {t} still there after {timeout:.0f}s" for t in left]
        return len(tops) - len(left)

    def _kill_procs(self, cgroup: Path) -> None:
        with contextlib.suppress(OSError):
            for pid in (cgroup / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)

    def delete_link(self, name: str) -> bool:
        if not Path(f"/sys/class/net/{name}").exists():
            return False
        r = self.run(["ip", "link", "delete", name])
        if r is not None and r.returncode != 0:
            self.errors.append(f"ip link delete {name}: {r.stderr.strip()}")
        return True
