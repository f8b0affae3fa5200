"""``ferricornc``: drive a running ferricorn (or gunicorn 27) over its control socket.

    ferricornc                       interactive prompt (history, ``quit`` to leave)
    ferricornc -c "show workers"     one command, then exit (status 1 on an error reply)
    ferricornc -c "show stats" -j    the reply's data as JSON, for scripts
    ferricornc -s /run/app.ctl ...   another socket than the default

The wire format is gunicorn 27's: a 4-byte big-endian length, then a JSON
object. See docs/control.md for the commands and the replies.
"""

import argparse
import json
import os
import shlex
import socket
import struct
import sys

MAX_REPLY = 16 * 1024 * 1024


def default_socket_path():
    """$XDG_RUNTIME_DIR/gunicorn.ctl when that directory exists, else ~/.gunicorn/gunicorn.ctl."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "gunicorn.ctl")
    return os.path.join(os.path.expanduser("~"), ".gunicorn", "gunicorn.ctl")


class ControlError(Exception):
    """The server answered with an error, or could not be reached."""


class Client:
    """One connection; requests are numbered from 1."""

    def __init__(self, path, timeout=30.0):
        self.path = path
        self.timeout = timeout
        self.sock = None
        self.last_id = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _connect(self):
        if self.sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self.path)
            except OSError as e:
                s.close()
                raise ControlError("cannot connect to %s: %s" % (self.path, e.strerror or e))
            self.sock = s

    def _recv_exact(self, n):
        parts = []
        while n:
            chunk = self.sock.recv(min(n, 65536))
            if not chunk:
                raise ControlError("the server closed the connection")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def request(self, command, args=None):
        """Send one command; return the reply's data, or raise ControlError."""
        self._connect()
        self.last_id += 1
        payload = json.dumps({"id": self.last_id, "command": command, "args": list(args or [])}).encode()
        try:
            self.sock.sendall(struct.pack(">I", len(payload)) + payload)
            (length,) = struct.unpack(">I", self._recv_exact(4))
            if length > MAX_REPLY:
                raise ControlError("reply too large (%d bytes)" % length)
            reply = json.loads(self._recv_exact(length).decode())
        except (OSError, ValueError) as e:
            self.close()
            raise ControlError("communication error: %s" % e)
        except ControlError:
            self.close()
            raise
        if reply.get("status") != "ok":
            raise ControlError(reply.get("error") or "unknown error")
        return reply.get("data") or {}


def _table(rows, headers):
    widths = [max([len(str(h))] + [len(str(r[i])) for r in rows]) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def _beat(seconds):
    return "-" if seconds is None else "%.2fs ago" % seconds


def _workers(workers):
    rows = [(w.get("pid"), w.get("age"), "yes" if w.get("booted") else "no", _beat(w.get("last_heartbeat"))) for w in workers]
    return _table(rows, ("PID", "AGE", "BOOTED", "LAST BEAT"))


def render(command, data):
    """Human-readable text for a reply to `command`."""
    words = [w.lower() for w in shlex.split(command)]
    what = " ".join(words[:2])
    if what == "show workers":
        return "%s\n\n%d worker(s)" % (_workers(data.get("workers", [])), data.get("count", 0))
    if what == "show all":
        master = data.get("arbiter") or {}
        text = ["master: pid %s" % master.get("pid"), "", _workers(data.get("web_workers", []))]
        if data.get("dirty_arbiter"):
            text.append("\ndirty arbiter: pid %s" % data["dirty_arbiter"].get("pid"))
        return "\n".join(text)
    if what == "show stats":
        uptime = data.get("uptime")
        rows = [
            ("uptime", "-" if uptime is None else "%.0fs" % uptime),
            ("master pid", data.get("pid")),
            ("workers", "%s of %s" % (data.get("workers_current"), data.get("workers_target"))),
            ("workers spawned", data.get("workers_spawned")),
            ("workers killed", data.get("workers_killed")),
            ("reloads", data.get("reloads")),
        ]
        return "\n".join("%-16s %s" % r for r in rows)
    if what == "show listeners":
        rows = [(lst.get("address"), lst.get("type"), lst.get("fd")) for lst in data.get("listeners", [])]
        return _table(rows, ("ADDRESS", "TYPE", "FD"))
    if what == "show config":
        width = max((len(k) for k in data), default=0)
        return "\n".join("%s = %r" % (k.ljust(width), v) for k, v in sorted(data.items()))
    if what == "show dirty":
        if not data.get("enabled"):
            return "no dirty-app pool is configured"
        return json.dumps(data, indent=2)
    if words[:1] == ["help"]:
        cmds = data.get("commands", {})
        width = max((len(k) for k in cmds), default=0)
        return "\n".join("%s  %s" % (k.ljust(width), v) for k, v in cmds.items())
    if data.get("success") is False:
        return "failed: %s" % data.get("error")
    return json.dumps(data, indent=2) if data else "OK"


def one_shot(path, command, as_json):
    try:
        with Client(path) as client:
            data = client.request(command)
    except ControlError as e:
        print("Error: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2) if as_json else render(command, data))
    return 0


def interactive(path, as_json):
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    client = Client(path)
    try:
        client._connect()
    except ControlError as e:
        print("Error: %s" % e, file=sys.stderr)
        return 1
    print("Connected to %s; 'help' lists the commands, 'quit' leaves." % path)
    try:
        while True:
            try:
                line = input("ferricorn> ").strip()
            except EOFError:
                print()
                return 0
            if not line:
                continue
            if line.lower() in ("quit", "exit"):
                return 0
            try:
                data = client.request(line)
            except ControlError as e:
                print("Error: %s" % e)
                continue
            print(json.dumps(data, indent=2) if as_json else render(line, data))
            if line.split()[0].lower() == "shutdown":
                return 0
    except KeyboardInterrupt:
        print()
        return 130
    finally:
        client.close()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="ferricornc",
        description="Control a running ferricorn (or gunicorn 27) through its control socket.",
    )
    parser.add_argument("-s", "--socket", default=default_socket_path(), help="control socket path (default: %(default)s)")
    parser.add_argument("-c", "--command", help="run one command and exit")
    parser.add_argument("-j", "--json", action="store_true", help="print the reply's data as JSON")
    args = parser.parse_args(argv)
    path = os.path.abspath(args.socket)
    if args.command is not None:
        return one_shot(path, args.command, args.json)
    return interactive(path, args.json)


if __name__ == "__main__":
    sys.exit(main())
