//! Measures flate2's gzip speed and size on generated mail-like data.
//!
//! `cargo run --release -p tools --bin gzip_backends [--features zlib-rs|zlib-ng] -- [MB [LEVEL...]]`
//!
//! The data (default 200 MB) is made here, never downloaded: RFC 5322 messages with
//! headers, text bodies drawn from a word list, quoted replies, and base64 attachments of
//! random bytes (incompressible, like the JPEGs and PDFs mail carries) in one message of
//! 36 (a third of the bytes), tuned so that gzip -1 keeps about half the bytes, as on the synthetic spool of
//! docs/performance-aims.md. It is compressed as 8 MiB gzip members (about a chunk each),
//! then inflated member by member, as the archive writer and scanner do. Best of 3 runs;
//! levels 1, 2 and 6 unless given.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use flate2::Compression;
use testkit::Rng;

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "meeting",
    "project",
    "report",
    "please",
    "thanks",
    "attached",
    "schedule",
    "invoice",
    "review",
    "server",
    "backup",
    "mailbox",
    "quarterly",
    "budget",
    "deadline",
    "customer",
    "release",
    "Monday",
    "Friday",
    "regards",
    "update",
    "question",
    "tomorrow",
    "afternoon",
    "proposal",
    "contract",
    "delivery",
    "shipping",
    "account",
    "password",
    "support",
    "ticket",
    "issue",
];

fn base64_line(rng: &mut Rng, out: &mut Vec<u8>) {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for _ in 0..76 {
        out.push(B64[rng.below(64) as usize]);
    }
    out.extend_from_slice(b"\r\n");
}

fn message(rng: &mut Rng, n: u64, out: &mut Vec<u8>) {
    let from = WORDS[rng.below(WORDS.len() as u64) as usize];
    let _ = write!(
        out,
        "Return-Path: <{from}@example.com>\r\nReceived: from mx{}.example.net (mx{}.example.net [192.0.2.{}])\r\n\tby imap.example.org (Cyrus 3.6.1) with LMTPA;\r\n\tMon, 23 Nov 2026 06:{:02}:{:02} +0000\r\nMessage-ID: <{:016x}@example.com>\r\nDate: Mon, 23 Nov 2026 06:30:24 +0000\r\nFrom: {from} <{from}@example.com>\r\nTo: user{} <user{}@example.org>\r\nSubject: Re: {} {} {}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b{n}\"\r\n\r\n--b{n}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        rng.below(9), rng.below(9), rng.below(255), rng.below(60), rng.below(60), rng.next_u64(),
        n % 300, n % 300,
        WORDS[rng.below(WORDS.len() as u64) as usize],
        WORDS[rng.below(WORDS.len() as u64) as usize],
        WORDS[rng.below(WORDS.len() as u64) as usize],
    );
    let lines = 5 + rng.below(60);
    for i in 0..lines {
        let mut line = Vec::new();
        if i > lines / 2 {
            line.extend_from_slice(b"> ");
        }
        while line.len() < 70 {
            line.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
            line.push(b' ');
        }
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
    }
    // One message in 36 carries an attachment of 4 to 100 KiB.
    if rng.below(36) == 0 {
        let _ = write!(
            out,
            "--b{n}\r\nContent-Type: application/pdf; name=\"doc{n}.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        );
        for _ in 0..(4 * 1024 + rng.below(96 * 1024)) / 57 {
            base64_line(rng, out);
        }
    }
    let _ = write!(out, "--b{n}--\r\n");
}

fn generate(bytes: usize) -> Vec<u8> {
    // Seeded: every run and backend sees the same bytes.
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(bytes + 200_000);
    let mut n = 0;
    while out.len() < bytes {
        message(&mut rng, n, &mut out);
        n += 1;
    }
    out.truncate(bytes);
    out
}

const MEMBER: usize = 8 << 20;

fn compress(data: &[u8], level: u32) -> Vec<Vec<u8>> {
    data.chunks(MEMBER)
        .map(|chunk| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), Compression::new(level));
            for piece in chunk.chunks(64 * 1024) {
                enc.write_all(piece).expect("write to memory");
            }
            enc.finish().expect("finish in memory")
        })
        .collect()
}

fn decompress(members: &[Vec<u8>]) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    for m in members {
        let mut dec = flate2::bufread::GzDecoder::new(&m[..]);
        loop {
            let n = dec.read(&mut buf).expect("valid gzip");
            if n == 0 {
                break;
            }
            total += n;
        }
    }
    total
}

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        out = Some(r);
    }
    (best, out.expect("at least one run"))
}

fn backend() -> &'static str {
    if cfg!(feature = "zlib-ng") {
        "zlib-ng"
    } else if cfg!(feature = "zlib-rs") {
        "zlib-rs"
    } else {
        "miniz_oxide"
    }
}

fn main() {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let mut levels: Vec<u32> = std::env::args()
        .skip(2)
        .filter_map(|a| a.parse().ok())
        .collect();
    if levels.is_empty() {
        levels = vec![1, 2, 6];
    }
    let data = generate(mb * 1_000_000);
    // To compare with other tools (gzip, pigz) on the same bytes.
    if let Some(path) = std::env::var_os("GZIP_BACKENDS_DUMP") {
        std::fs::write(path, &data).expect("write the dump file");
    }
    let mbs = |d: Duration| data.len() as f64 / 1e6 / d.as_secs_f64();
    for level in levels {
        let (tc, members) = best(3, || compress(&data, level));
        let size: usize = members.iter().map(Vec::len).sum();
        let (td, n) = best(3, || decompress(&members));
        assert_eq!(n, data.len());
        println!(
            "{:<12} level {level}: compress {:7.1} MB/s, decompress {:7.1} MB/s, size {:.1}% ({} of {} bytes)",
            backend(),
            mbs(tc),
            mbs(td),
            100.0 * size as f64 / data.len() as f64,
            size,
            data.len()
        );
    }
}
