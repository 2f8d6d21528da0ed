"""Deterministic generators of realistic RFC 5322 messages (CRLF line ends), stdlib only.

`MailGen` builds varied messages for populate.py (plain ASCII, raw 8-bit UTF-8 bodies and
headers, RFC 2047 encoded words, multipart/alternative, multipart/mixed with base64
attachments, tiny ones). `FastGen` builds many messages quickly for bulk.py by slicing
pre-generated pools of text and base64 lines, with sizes drawn from a log-normal distribution.
Everything depends only on the seed.
"""

import base64
import datetime
import math
import random

WORDS = (
    "the of and to in is for that on with as it by be this are from at or an have not was "
    "backup server mailbox folder message index cache partition restore deliver archive "
    "report meeting budget quarter review release schedule invoice project update please "
    "thanks regards tomorrow monday friday draft attached document contract agenda notes "
    "question answer issue ticket customer support network storage cluster migration plan "
    "deadline holiday lunch coffee office remote team lead design proposal version build "
    "test failure success latency throughput disk memory kernel database replica snapshot"
).split()

UTF8_PHRASES = [
    "Grüße aus München, schöne Woche!",
    "Café crème et croissants à volonté.",
    "Ещё раз спасибо за помощь.",
    "会議は明日の午後三時からです。",
    "Ολα καλά, ευχαριστώ.",
    "Zażółć gęślą jaźń.",
    "¡Feliz año nuevo! ñandú",
    "שלום עולם",
    "emoji 📦✉️🚀 in the body",
]

FIRST = ["Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy",
         "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter"]
LAST = ["Smith", "Jones", "Müller", "Dubois", "Ivanova", "Tanaka", "García", "Rossi", "Novak",
        "Kowalski", "Nguyen", "O'Brien", "Larsen", "Schmidt", "Martin"]
UTF8_NAMES = ["Jürgen Groß", "Zoë Lefèvre", "Иван Петров", "山田 太郎", "Łukasz Żak", "Søren Ørsted"]

BASE_DATE = datetime.datetime(2024, 1, 15, 9, 30, 0, tzinfo=datetime.timezone.utc)


def rfc2822_date(dt):
    return dt.strftime("%a, %d %b %Y %H:%M:%S +0000")


def encoded_word(text):
    """RFC 2047 B-encoded word (UTF-8)."""
    return "=?UTF-8?B?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def wrap_words(words, width=72):
    lines, cur = [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = cur + " " + w if cur else w
    if cur:
        lines.append(cur)
    return lines


def b64_lines(data):
    enc = base64.b64encode(data)
    return b"\r\n".join(enc[i:i + 76] for i in range(0, len(enc), 76))


class MailGen:
    """Varied messages for populate.py; `self.n` numbers them so every Message-ID differs."""

    def __init__(self, seed, domain="example.test"):
        self.rng = random.Random(seed)
        self.seed = seed
        self.domain = domain
        self.n = 0

    def _person(self):
        r = self.rng
        first, last = r.choice(FIRST), r.choice(LAST)
        addr = "%s.%s@%s" % (first.lower(), last.lower().replace("'", ""), self.domain)
        addr = addr.encode("ascii", "ignore").decode()
        name = "%s %s" % (first, last)
        if not name.isascii():
            name = encoded_word(name)
        return name, addr

    def _date(self):
        self.n += 1
        return BASE_DATE + datetime.timedelta(minutes=37 * self.n + self.rng.randrange(30))

    def _text(self, nbytes):
        words, size = [], 0
        while size < nbytes:
            w = self.rng.choice(WORDS)
            words.append(w)
            size += len(w) + 1
        return "\r\n".join(wrap_words(words)) + "\r\n"

    def _headers(self, to, subject, extra=(), from_=None, raw_subject=False):
        name, addr = from_ or self._person()
        dt = self._date()
        h = [
            "Return-Path: <%s>" % addr,
            "From: %s <%s>" % (name, addr),
            "To: %s" % to,
            "Subject: %s" % subject,
            "Date: %s" % rfc2822_date(dt),
            "Message-ID: <%d.%d.%08x@%s>" % (self.seed, self.n, self.rng.getrandbits(32), self.domain),
        ]
        h.extend(extra)
        return "\r\n".join(h) + "\r\n"

    def plain(self, to, nbytes=None):
        """Plain 7-bit ASCII text."""
        nbytes = nbytes or self.rng.randrange(200, 6000)
        subj = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randrange(2, 8))).capitalize()
        h = self._headers(to, subj, ["MIME-Version: 1.0",
                                     "Content-Type: text/plain; charset=us-ascii"])
        return (h + "\r\n" + self._text(nbytes)).encode("ascii")

    def utf8_8bit(self, to):
        """Raw UTF-8 in the body (8bit) and in the From display name and Subject."""
        r = self.rng
        subj = "%s %s" % (r.choice(UTF8_PHRASES), r.choice(WORDS))
        who = (r.choice(UTF8_NAMES), "intl%d@%s" % (r.randrange(100), self.domain))
        body = "\r\n".join(r.choice(UTF8_PHRASES) for _ in range(r.randrange(3, 40))) + "\r\n"
        h = self._headers(to, subj, ["MIME-Version: 1.0",
                                     "Content-Type: text/plain; charset=utf-8",
                                     "Content-Transfer-Encoding: 8bit"], from_=who)
        return (h + "\r\n" + body).encode("utf-8")

    def encoded_words(self, to):
        """7-bit headers with RFC 2047 encoded UTF-8, quoted-printable body."""
        r = self.rng
        subj = encoded_word(r.choice(UTF8_PHRASES))
        name = encoded_word(r.choice(UTF8_NAMES))
        phrase = r.choice(UTF8_PHRASES).encode("utf-8")
        qp = "".join("=%02X" % b if b > 126 or b == 61 else chr(b) for b in phrase)
        h = self._headers(to, subj, ["MIME-Version: 1.0",
                                     "Content-Type: text/plain; charset=utf-8",
                                     "Content-Transfer-Encoding: quoted-printable"],
                          from_=(name, "qp%d@%s" % (r.randrange(100), self.domain)))
        return (h + "\r\n" + qp + "\r\n" + self._text(r.randrange(100, 2000))).encode("ascii")

    def alternative(self, to):
        """multipart/alternative: text and HTML."""
        r = self.rng
        boundary = "alt-%016x" % r.getrandbits(64)
        text = self._text(r.randrange(300, 4000))
        html = "<html><body><p>" + text.replace("\r\n", "</p>\r\n<p>") + "</p></body></html>\r\n"
        subj = "Newsletter: " + " ".join(r.choice(WORDS) for _ in range(4))
        h = self._headers(to, subj, ["MIME-Version: 1.0",
                                     'Content-Type: multipart/alternative; boundary="%s"' % boundary,
                                     "List-Id: <news.%s>" % self.domain])
        body = ("This is a multi-part message in MIME format.\r\n"
                "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s"
                "--%s\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n%s"
                "--%s--\r\n") % (boundary, text, boundary, html, boundary)
        return (h + "\r\n" + body).encode("ascii")

    def attachment(self, to, nbytes):
        """multipart/mixed with a base64 attachment of `nbytes` random bytes."""
        r = self.rng
        boundary = "mix-%016x" % r.getrandbits(64)
        data = r.randbytes(nbytes)
        fname = "report-%d.bin" % self.n
        subj = "Attached: %s (%d KB)" % (fname, nbytes // 1024)
        h = self._headers(to, subj, ["MIME-Version: 1.0",
                                     'Content-Type: multipart/mixed; boundary="%s"' % boundary])
        head = ("--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s"
                "--%s\r\nContent-Type: application/octet-stream; name=\"%s\"\r\n"
                "Content-Transfer-Encoding: base64\r\n"
                "Content-Disposition: attachment; filename=\"%s\"\r\n\r\n") % (
                    boundary, self._text(r.randrange(100, 800)), boundary, fname, fname)
        return (h + "\r\n" + head).encode("ascii") + b64_lines(data) + (
            "\r\n--%s--\r\n" % boundary).encode("ascii")

    def tiny(self, to):
        """The smallest sensible message: two headers and one line."""
        self.n += 1
        return ("From: t@%s\r\nSubject: t%d\r\n\r\nx\r\n" % (self.domain, self.n)).encode("ascii")

    def any(self, to):
        """One message of a kind drawn with realistic odds."""
        k = self.rng.random()
        if k < 0.40:
            return self.plain(to)
        if k < 0.55:
            return self.utf8_8bit(to)
        if k < 0.65:
            return self.encoded_words(to)
        if k < 0.82:
            return self.alternative(to)
        if k < 0.92:
            return self.attachment(to, self.rng.randrange(5_000, 300_000))
        return self.tiny(to)


class FastGen:
    """Many realistic messages, fast: bodies are slices of pre-generated pools.

    Sizes: log-normal. 65% plain text (median `text_median` bytes), 35% multipart/mixed with a
    base64 attachment (median `att_median` bytes, capped at `max_size`). Every message gets
    unique headers, so its bytes (and SHA-1) are unique unless deliberately shared.
    """

    def __init__(self, seed, text_median=4000, att_median=60000, sigma=1.2,
                 max_size=8 << 20, scale=1.0, domain="example.test"):
        self.rng = random.Random(seed)
        self.seed = seed
        self.domain = domain
        self.text_median = text_median * scale
        self.att_median = att_median * scale
        self.sigma = sigma
        self.max_size = max_size
        self.n = 0
        pool_rng = random.Random(seed ^ 0x5EED)
        words = [pool_rng.choice(WORDS) for _ in range(400_000)]
        self.text_pool = ("\r\n".join(wrap_words(words)) + "\r\n").encode("ascii")
        self.b64_pool = b64_lines(pool_rng.randbytes(3 << 20)) + b"\r\n"
        self.b64_pool += self.b64_pool  # ~8 MB of lines, enough for max_size slices

    def _slice(self, pool, nbytes):
        nbytes = min(nbytes, len(pool) // 2)
        start = self.rng.randrange(0, len(pool) - nbytes)
        start = pool.index(b"\n", start) + 1  # whole lines only
        end = pool.index(b"\n", start + max(nbytes, 1) - 1) + 1 if start + nbytes < len(pool) else len(pool)
        return pool[start:end]

    def message(self, to, when):
        """(bytes, unix time) of a new message to `to`, dated around `when` (datetime)."""
        r = self.rng
        self.n += 1
        first, last = r.choice(FIRST), r.choice(LAST)
        addr = ("%s.%s@%s" % (first, last, self.domain)).lower().encode("ascii", "ignore").decode()
        addr = addr.replace("'", "")
        dt = when
        subj = " ".join(r.choice(WORDS) for _ in range(r.randrange(2, 9))).capitalize()
        head = ("Return-Path: <%s>\r\nFrom: %s %s <%s>\r\nTo: %s\r\nSubject: %s\r\n"
                "Date: %s\r\nMessage-ID: <%d.%d.%08x@%s>\r\nMIME-Version: 1.0\r\n") % (
                    addr, first, last, addr, to, subj, rfc2822_date(dt), self.seed, self.n,
                    r.getrandbits(32), self.domain)
        head = head.encode("utf-8")  # display names may hold raw UTF-8, as in real spools
        if r.random() < 0.65:
            size = int(min(self.max_size, max(200, r.lognormvariate(math.log(self.text_median), self.sigma))))
            msg = head + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + \
                self._slice(self.text_pool, size)
        else:
            size = int(min(self.max_size, max(2000, r.lognormvariate(math.log(self.att_median), self.sigma))))
            b = "b-%016x" % r.getrandbits(64)
            msg = head + ('Content-Type: multipart/mixed; boundary="%s"\r\n\r\n'
                          "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" % (b, b)).encode()
            msg += self._slice(self.text_pool, r.randrange(100, 2000))
            msg += ("--%s\r\nContent-Type: application/pdf; name=\"doc%d.pdf\"\r\n"
                    "Content-Transfer-Encoding: base64\r\n"
                    "Content-Disposition: attachment; filename=\"doc%d.pdf\"\r\n\r\n" % (b, self.n, self.n)).encode()
            msg += self._slice(self.b64_pool, size)
            msg += ("--%s--\r\n" % b).encode()
        return msg, dt.timestamp()
