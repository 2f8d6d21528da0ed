"""Small stdlib-only clients for a private Cyrus instance: IMAP (with pipelining and a real
response parser), LMTP (one reply per accepted recipient after DATA) and ManageSieve.

Used by populate.py, imap_truth.py and bulk.py in this directory. Not a general IMAP library:
it parses what Cyrus 3.x sends to the commands those scripts issue.
"""

import base64
import json
import sys
import re
import socket

PASSWORD = "x"  # the instances use sasl_pwcheck_method: alwaystrue


class ProtocolError(Exception):
    """The server said something we did not expect (or NO/BAD to a command that must work)."""


def quote(s):
    """An IMAP quoted string (names we use never hold CR, LF or NUL)."""
    if isinstance(s, bytes):
        s = s.decode("utf-8")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _encode_mutf7_chunk(chunk):
    b = chunk.encode("utf-16-be")
    return "&" + base64.b64encode(b).decode("ascii").rstrip("=").replace("/", ",") + "-"


def mutf7_encode(name):
    """Modified UTF-7 (RFC 3501 5.1.3) of a mailbox name, as IMAP wants it on the wire."""
    out, pending = [], ""
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            if pending:
                out.append(_encode_mutf7_chunk(pending))
                pending = ""
            out.append("&-" if ch == "&" else ch)
        else:
            pending += ch
    if pending:
        out.append(_encode_mutf7_chunk(pending))
    return "".join(out)


class Imap:
    """One IMAP connection. `command` runs one command and returns its untagged responses;
    `send` + `collect` pipeline many commands (Cyrus answers them in order)."""

    def __init__(self, host, port, timeout=120):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.rfile = self.sock.makefile("rb", buffering=1 << 16)
        self.ntag = 0
        self.pending = []  # tags sent, not yet completed
        greeting = self.rfile.readline()
        if not greeting.startswith(b"* OK"):
            raise ProtocolError("IMAP greeting: %r" % greeting)

    # -- low level -------------------------------------------------------------------------
    def send(self, line, literals=()):
        """Sends a command (str, without tag); `literals` are bytes sent as non-synchronising
        literals {n+} appended after the line, each followed by the text of the next part.
        Returns the tag."""
        self.ntag += 1
        tag = "A%05d" % self.ntag
        if isinstance(line, str):
            line = line.encode("utf-8")
        data = tag.encode() + b" " + line
        if literals:
            parts = [data]
            for lit, after in literals:
                parts.append(b" {%d+}\r\n" % len(lit))
                parts.append(lit)
                parts.append(after.encode("utf-8") if isinstance(after, str) else after)
            data = b"".join(parts)
        self.sock.sendall(data + b"\r\n")
        self.pending.append(tag)
        return tag

    def collect(self, tag, check=True):
        """Reads responses until `tag` completes. Returns (status, text, untagged) for that
        command; untagged responses of earlier pipelined commands are discarded unless they
        were failures (then ProtocolError if check)."""
        untagged = []
        while True:
            kind, payload = self._read_response()
            if kind == "*":
                untagged.append(payload)
                continue
            if kind == "+":
                raise ProtocolError("unexpected continuation: %r" % (payload,))
            rtag, status, text = payload
            if rtag not in self.pending:
                raise ProtocolError("unknown tag %r" % rtag)
            self.pending.remove(rtag)
            if rtag != tag:
                if check and status != "OK":
                    raise ProtocolError("%s %s %s" % (rtag, status, text))
                untagged = []
                continue
            if check and status != "OK":
                raise ProtocolError("%s %s %s" % (rtag, status, text))
            return status, text, untagged

    def collect_all(self, check=True):
        """Waits for every pipelined command; returns [(status, text)] in order."""
        results = []
        while self.pending:
            tag = self.pending[0]
            status, text, _ = self.collect(tag, check=check)
            results.append((status, text))
        return results

    def command(self, line, literals=(), check=True):
        """One command, synchronously: (status, text, untagged)."""
        return self.collect(self.send(line, literals), check=check)

    # -- parsing ---------------------------------------------------------------------------
    def _readline(self):
        line = self.rfile.readline()
        if not line:
            raise ProtocolError("connection closed by server")
        return line

    def _read_response(self):
        """('*', [tokens...]) | ('+', text) | ('tag', (tag, status, text))."""
        line = self._readline()
        if line.startswith(b"+"):
            return "+", line[1:].strip().decode("utf-8", "replace")
        if line.startswith(b"* "):
            head = line[2:]
            word = head.split(b" ", 1)[0].rstrip(b"\r\n").upper()
            if word in (b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH", b"CAPABILITY"):
                # Free text (response codes): keep it raw.
                rest = head[len(word):].strip().decode("utf-8", "replace")
                return "*", [word.decode(), rest]
            tokens = _Parser(head, self).parse_line()
            if word == b"STATUS":
                # Keep the server's own text too: truth files record it verbatim.
                tokens.append(head[len(b"STATUS "):].rstrip(b"\r\n").decode("utf-8", "replace"))
            return "*", tokens
        tag, _, rest = line.partition(b" ")
        status, _, text = rest.partition(b" ")
        return "tag", (tag.decode(), status.decode().upper(),
                       text.strip().decode("utf-8", "replace"))

    # -- conveniences ----------------------------------------------------------------------
    def login(self, user):
        self.command("LOGIN %s %s" % (quote(user), quote(PASSWORD)))

    def logout(self):
        try:
            self.send("LOGOUT")
            self.collect_all(check=False)
        except (ProtocolError, OSError):
            pass
        finally:
            self.close()

    def close(self):
        try:
            self.rfile.close()
            self.sock.close()
        except OSError:
            pass

    def list(self, ref, pattern):
        """[(flags, delimiter, name)] for LIST."""
        _, _, untagged = self.command("LIST %s %s" % (quote(ref), quote(pattern)))
        out = []
        for u in untagged:
            if u and u[0] == "LIST":
                out.append(([_s(f) for f in u[1]], _s(u[2]), _s(u[3])))
        return out

    def lsub(self, ref, pattern):
        _, _, untagged = self.command("LSUB %s %s" % (quote(ref), quote(pattern)))
        return [_s(u[3]) for u in untagged if u and u[0] == "LSUB"]


def _s(tok):
    """A token (atom, quoted string or literal) as str."""
    if isinstance(tok, bytes):
        return tok.decode("utf-8", "surrogateescape")
    if tok is None:
        return None
    return str(tok)


_ATOM_END = b" ()\r\n"


class _Parser:
    """Tokenises one untagged response: atoms (bytes; numbers as int), quoted strings
    (bytes), literals (bytes), NIL (None), parenthesised lists (list). Reads literal bytes
    and the continuation of the line from the connection as needed."""

    def __init__(self, line, conn):
        self.buf = line
        self.pos = 0
        self.conn = conn

    def parse_line(self):
        out = []
        while True:
            self._skip_spaces()
            if self._at_eol():
                return out
            out.append(self._token())

    def _at_eol(self):
        return self.buf[self.pos:self.pos + 2] == b"\r\n" or self.pos >= len(self.buf)

    def _skip_spaces(self):
        while self.pos < len(self.buf) and self.buf[self.pos:self.pos + 1] == b" ":
            self.pos += 1

    def _token(self):
        c = self.buf[self.pos:self.pos + 1]
        if c == b"(":
            self.pos += 1
            items = []
            while True:
                self._skip_spaces()
                if self.buf[self.pos:self.pos + 1] == b")":
                    self.pos += 1
                    return items
                if self._at_eol():
                    raise ProtocolError("unterminated list in %r" % self.buf)
                items.append(self._token())
        if c == b'"':
            self.pos += 1
            out = bytearray()
            while True:
                ch = self.buf[self.pos:self.pos + 1]
                if ch == b"\\":
                    out += self.buf[self.pos + 1:self.pos + 2]
                    self.pos += 2
                elif ch == b'"':
                    self.pos += 1
                    return bytes(out)
                elif ch in (b"", b"\r", b"\n"):
                    raise ProtocolError("unterminated quoted string in %r" % self.buf)
                else:
                    out += ch
                    self.pos += 1
        if c == b"{":
            end = self.buf.index(b"}", self.pos)
            n = int(self.buf[self.pos + 1:end].rstrip(b"+"))
            data = self.conn.rfile.read(n)
            if len(data) != n:
                raise ProtocolError("short literal")
            # The response continues on the next line read from the connection.
            self.buf = self.conn._readline()
            self.pos = 0
            return data
        start = self.pos
        depth = 0
        while self.pos < len(self.buf):
            ch = self.buf[self.pos:self.pos + 1]
            if ch == b"[":
                depth += 1
            elif ch == b"]":
                depth -= 1
            elif depth == 0 and ch in (b" ", b"(", b")", b"\r", b"\n"):
                break
            self.pos += 1
        atom = self.buf[start:self.pos]
        if atom.upper() == b"NIL":
            return None
        if atom.isdigit():
            return int(atom)
        if atom in (b"LIST", b"LSUB", b"STATUS", b"FETCH", b"METADATA", b"SEARCH",
                    b"EXISTS", b"RECENT", b"EXPUNGE", b"FLAGS", b"ACL", b"MYRIGHTS",
                    b"NAMESPACE", b"ESEARCH", b"VANISHED"):
            return atom.decode()
        return atom


def fetch_items(tokens):
    """For `* n FETCH (k v k v ...)`: (seq, {KEY: value})."""
    seq, _, items = tokens[0], tokens[1], tokens[2]
    d = {}
    for i in range(0, len(items), 2):
        d[_s(items[i]).upper()] = items[i + 1]
    return seq, d


_CODE = re.compile(r"\[([A-Z-]+)(?: ([^\]]*))?\]")


def response_codes(texts):
    """{CODE: arg} from texts like '[UIDNEXT 5] Ok'."""
    out = {}
    for t in texts:
        for m in _CODE.finditer(t):
            out[m.group(1)] = m.group(2)
    return out


# ---------------------------------------------------------------------------------------------
class Lmtp:
    """An LMTP session. `deliver` sends one message to one or more recipients in a single
    transaction and returns one reply per recipient (RFC 2033: one per accepted RCPT)."""

    def __init__(self, host, port, timeout=120):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.rfile = self.sock.makefile("rb")
        code, lines = self._reply()
        if code != 220:
            raise ProtocolError("LMTP greeting: %s %s" % (code, lines))
        self._cmd("LHLO localhost", 250)

    def _reply(self):
        lines = []
        while True:
            line = self.rfile.readline()
            if not line:
                raise ProtocolError("LMTP connection closed")
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def _cmd(self, line, want):
        self.sock.sendall(line.encode("utf-8") + b"\r\n")
        code, lines = self._reply()
        if code != want:
            raise ProtocolError("LMTP %r: %s" % (line, lines))
        return lines

    def deliver(self, sender, recipients, message):
        """Delivers `message` (bytes, CRLF line ends) to every recipient; raises if any is
        refused. Returns the replies."""
        if isinstance(recipients, str):
            recipients = [recipients]
        self._cmd("MAIL FROM:<%s> BODY=8BITMIME" % sender, 250)
        for r in recipients:
            self._cmd("RCPT TO:<%s>" % r, 250)
        self._cmd("DATA", 354)
        body = message
        if body.startswith(b"."):
            body = b"." + body
        body = body.replace(b"\r\n.", b"\r\n..")
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self.sock.sendall(body + b".\r\n")
        replies = []
        for r in recipients:
            code, lines = self._reply()
            if code != 250:
                raise ProtocolError("LMTP delivery to %s refused: %s" % (r, lines))
            replies.append(lines)
        return replies

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
            self._reply()
        except (ProtocolError, OSError):
            pass
        self.sock.close()


# ---------------------------------------------------------------------------------------------
class ManageSieve:
    """A ManageSieve (RFC 5804) session, authenticated as `user` with SASL PLAIN."""

    def __init__(self, host, port, user, timeout=60):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.rfile = self.sock.makefile("rb")
        self._response()  # capabilities, ending with OK
        token = base64.b64encode(b"\0" + user.encode() + b"\0" + PASSWORD.encode()).decode()
        self._command('AUTHENTICATE "PLAIN" "%s"' % token)

    def _response(self):
        lines = []
        while True:
            line = self.rfile.readline()
            if not line:
                raise ProtocolError("managesieve connection closed")
            m = re.search(rb"\{(\d+)\+?\}\r\n$", line)
            if m:  # a literal inside the response: read it whole
                line = line + self.rfile.read(int(m.group(1)))
            lines.append(line)
            head = line[:3].upper()
            if head.startswith(b"OK"):
                return lines
            if head.startswith(b"NO") or head == b"BYE":
                raise ProtocolError("managesieve: %r" % b"".join(lines))

    def _command(self, line, literal=None):
        data = line.encode("utf-8")
        if literal is not None:
            data += b" {%d+}\r\n" % len(literal) + literal
        self.sock.sendall(data + b"\r\n")
        return self._response()

    def putscript(self, name, script):
        self._command('PUTSCRIPT "%s"' % name, script)

    def setactive(self, name):
        self._command('SETACTIVE "%s"' % name)

    def listscripts(self):
        return self._command("LISTSCRIPTS")

    def scripts(self):
        """[(name, active)] from LISTSCRIPTS, in the server's order. Names come quoted (Cyrus
        sends a literal only for names with CR/LF, which we never use)."""
        out = []
        for line in self.listscripts()[:-1]:
            m = re.match(rb'^"((?:[^"\\]|\\.)*)"( ACTIVE)?\r\n$', line)
            if not m:
                raise ProtocolError("LISTSCRIPTS line: %r" % line)
            out.append((re.sub(rb"\\(.)", rb"\1", m.group(1)).decode("utf-8"), bool(m.group(2))))
        return out

    def getscript(self, name):
        """The script's bytes (GETSCRIPT answers a literal, then OK)."""
        lines = self._command('GETSCRIPT "%s"' % name)
        head = lines[0]
        m = re.match(rb"^\{(\d+)\+?\}\r\n", head)
        if not m:
            raise ProtocolError("GETSCRIPT %s: %r" % (name, lines))
        body = head[m.end():]
        if len(body) != int(m.group(1)):
            raise ProtocolError("GETSCRIPT %s: short literal" % name)
        return body

    def close(self):
        try:
            self.sock.sendall(b"LOGOUT\r\n")
            self._response()
        except (ProtocolError, OSError):
            pass
        self.sock.close()


def write_json(path, obj):
    """Writes obj as indented UTF-8 JSON to path ('-': standard output)."""
    text = json.dumps(obj, indent=1, ensure_ascii=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
