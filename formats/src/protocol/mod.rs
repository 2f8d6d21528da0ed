//! The wire protocol between backupd (on the mail server) and the backup host: frames,
//! the handshake, requests and replies. Pure: bytes in, bytes out; the sockets and
//! the random nonces live in the two programs. docs/protocol.md is the specification;
//! this module is one implementation of it.
//!
//! * [`frame`]: the 9-byte header, the 16 MiB body bound, `check` then `parse` over a
//!   buffer of whatever has arrived.
//! * [`handshake`]: the shared [`Secret`] and the HMAC proofs both sides compute, bound to
//!   the TLS session ([`Binding`]).
//! * [`pin`]: the [`Pin`] of backupd's TLS key, as `backupd keygen` prints it and the backup
//!   host's configuration holds it.
//! * [`assemble`]: the client's side of a reply as a pure state machine (frames in, a
//!   [`UserListing`], [`MetaCopy`], ... out).
//! * [`message`]: the handshake ([`Greeting`], [`Auth`], [`AuthOk`]), [`Request`] and
//!   [`Reply`] with their encoders and decoders.
//!
//! A conversation (inside TLS 1.3 unless configured off): the server sends a [`Greeting`] (versions, a nonce); the client answers
//! [`Auth`] (its version, its nonce, its proof); the server answers [`AuthOk`] (its proof)
//! or an error and closes. Then the client sends requests, each with an id of its choice,
//! as many as it likes without waiting; the server answers them one after the other in
//! the order they came, each reply a run of frames carrying the request's id and ending
//! with [`Reply::End`] or [`Reply::Error`].
//!
//! The sockets and the random nonces live in `backupd` (the server) and `backup-server`
//! (its blocking client); everything both sides must agree on is here, once.

pub mod assemble;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod pin;
mod wire;

pub use crate::cyrus::MetaFile;
pub use assemble::{MetaCopy, ReplyError, UserFile, UserListing};
pub use frame::{check, parse, EncodeError, Frame, FrameError, FrameHeader, HEADER_LEN, MAX_BODY};
pub use handshake::{Binding, Secret, SecretError};
pub use message::{
    encode_data_header, encode_folders, encode_users, Auth, AuthOk, ErrorCode, ErrorReply,
    FolderStat, Greeting, Reply, Request, UserEntry, UserFileId, UserFileStat, LIST_FRAME_TARGET,
    MAGIC, MAX_USER_FILE_IDS, NONCE_LEN,
};
pub use pin::{Pin, PinError};
pub use wire::DecodeError;

/// The protocol version this implementation speaks (and the only one it speaks: version 1,
/// whose proofs were not bound to the transport, is refused).
pub const VERSION: u16 = 2;

/// The TCP port backupd listens on unless configured otherwise (FastMail's backupcyrusd
/// uses 2901; this protocol is a different one, so it has a port of its own).
pub const DEFAULT_PORT: u16 = 2912;

/// Frame kinds: the fifth byte of every frame header.
pub mod kind {
    /// Server → client, first frame: [`super::Greeting`].
    pub const GREETING: u8 = 0x01;
    /// Client → server: [`super::Auth`].
    pub const AUTH: u8 = 0x02;
    /// Server → client: [`super::AuthOk`].
    pub const AUTH_OK: u8 = 0x03;

    /// Request: [`super::Request::Ping`].
    pub const PING: u8 = 0x10;
    /// Request: [`super::Request::ListUsers`].
    pub const LIST_USERS: u8 = 0x11;
    /// Request: [`super::Request::ListFolders`].
    pub const LIST_FOLDERS: u8 = 0x12;
    /// Request: [`super::Request::CopyMeta`].
    pub const COPY_META: u8 = 0x13;
    /// Request: [`super::Request::FetchMessages`].
    pub const FETCH_MESSAGES: u8 = 0x14;
    /// Request: [`super::Request::FetchUserFiles`].
    pub const FETCH_USER_FILES: u8 = 0x15;

    /// Reply: [`super::Reply::End`].
    pub const END: u8 = 0x80;
    /// Reply: [`super::Reply::Error`].
    pub const ERROR: u8 = 0x81;
    /// Reply: [`super::Reply::Data`].
    pub const DATA: u8 = 0x82;
    /// Reply: [`super::Reply::Users`].
    pub const USERS: u8 = 0x83;
    /// Reply: [`super::Reply::Folders`].
    pub const FOLDERS: u8 = 0x84;
    /// Reply: [`super::Reply::UserFiles`].
    pub const USER_FILES: u8 = 0x85;
    /// Reply: [`super::Reply::MetaFile`].
    pub const META_FILE: u8 = 0x86;
    /// Reply: [`super::Reply::Message`].
    pub const MESSAGE: u8 = 0x87;
    /// Reply: [`super::Reply::Gone`].
    pub const GONE: u8 = 0x88;
    /// Reply: [`super::Reply::UserFile`].
    pub const USER_FILE: u8 = 0x89;
    /// Reply: [`super::Reply::Absent`].
    pub const ABSENT: u8 = 0x8a;
    /// Reply: [`super::Reply::ItemError`].
    pub const ITEM_ERROR: u8 = 0x8b;

    /// A name for logs and error texts.
    pub fn name(kind: u8) -> &'static str {
        match kind {
            GREETING => "greeting",
            AUTH => "auth",
            AUTH_OK => "auth ok",
            PING => "ping",
            LIST_USERS => "list users",
            LIST_FOLDERS => "list folders",
            COPY_META => "copy meta",
            FETCH_MESSAGES => "fetch messages",
            FETCH_USER_FILES => "fetch user files",
            END => "end",
            ERROR => "error",
            DATA => "data",
            USERS => "users",
            FOLDERS => "folders",
            USER_FILES => "user files",
            META_FILE => "meta file",
            MESSAGE => "message",
            GONE => "gone",
            USER_FILE => "user file",
            ABSENT => "absent",
            ITEM_ERROR => "item error",
            _ => "unknown",
        }
    }
}

#[cfg(test)]
mod tests;
