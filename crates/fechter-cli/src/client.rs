//! One request-reply exchange with fechterd over its control socket.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::proto::{PROTOCOL_VERSION, Reply, Request};

/// How long the CLI waits for the daemon to take the request and to answer it.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest reply line read; a status report of thousands of addresses fits many times over, and a
/// runaway peer cannot make the CLI buffer without end.
pub const MAX_REPLY_BYTES: u64 = 16 * 1024 * 1024;

/// Why an exchange with the daemon failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The socket could not be connected to.
    #[error("cannot connect to fechterd at {}: {reason} ({})", socket.display(), connect_hint(reason))]
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// What the operating system said.
        reason: io::Error,
    },
    /// The daemon did not take the request or did not answer within [`EXCHANGE_TIMEOUT`].
    #[error("fechterd at {} did not answer within {} s", socket.display(), EXCHANGE_TIMEOUT.as_secs())]
    Timeout {
        /// The socket used.
        socket: PathBuf,
    },
    /// Writing the request or reading the reply failed.
    #[error("lost the connection to fechterd at {}: {reason}", socket.display())]
    Io {
        /// The socket used.
        socket: PathBuf,
        /// What the operating system said.
        reason: io::Error,
    },
    /// The daemon closed the connection without a complete reply line.
    #[error("fechterd at {} closed the connection without replying", socket.display())]
    NoReply {
        /// The socket used.
        socket: PathBuf,
    },
    /// The reply line was not a reply this build understands.
    #[error("fechterd sent a reply that is not valid: {reason}")]
    MalformedReply {
        /// What the JSON parser said.
        reason: serde_json::Error,
    },
    /// The daemon speaks another protocol version.
    #[error(
        "fechterd speaks control protocol version {daemon}, this fechter speaks version {PROTOCOL_VERSION}; \
         use the fechter of the same release as fechterd"
    )]
    VersionMismatch {
        /// The version the daemon's reply carried.
        daemon: u64,
    },
}

/// Sends `request` to the daemon listening on `socket` and returns its reply.
pub fn exchange(socket: &Path, request: &Request) -> Result<Reply, ClientError> {
    let stream = UnixStream::connect(socket)
        .map_err(|reason| ClientError::Connect { socket: socket.to_owned(), reason })?;
    let io_error = |reason: io::Error| match reason.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ClientError::Timeout { socket: socket.to_owned() }
        }
        _ => ClientError::Io { socket: socket.to_owned(), reason },
    };
    stream.set_read_timeout(Some(EXCHANGE_TIMEOUT)).map_err(io_error)?;
    stream.set_write_timeout(Some(EXCHANGE_TIMEOUT)).map_err(io_error)?;

    let mut line = encode_request(request);
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io_error)?;

    let mut reply_line = Vec::new();
    BufReader::new((&stream).take(MAX_REPLY_BYTES)).read_until(b'\n', &mut reply_line).map_err(io_error)?;
    if reply_line.last() != Some(&b'\n') {
        return Err(ClientError::NoReply { socket: socket.to_owned() });
    }
    decode_reply(&reply_line)
}

/// The request as one JSON line, without the newline.
pub fn encode_request(request: &Request) -> String {
    // The derived Serialize of these plain types cannot fail; were it ever to, the empty line would
    // get a malformed-request error from the daemon rather than a panic here.
    serde_json::to_string(request).unwrap_or_default()
}

/// Reads a reply line, checking its version before its shape so that a daemon of another release is
/// reported as such and not as garbage.
pub fn decode_reply(line: &[u8]) -> Result<Reply, ClientError> {
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|reason| ClientError::MalformedReply { reason })?;
    if let Some(daemon) = value.get("version").and_then(serde_json::Value::as_u64)
        && daemon != u64::from(PROTOCOL_VERSION)
    {
        return Err(ClientError::VersionMismatch { daemon });
    }
    serde_json::from_value(value).map_err(|reason| ClientError::MalformedReply { reason })
}

fn connect_hint(reason: &io::Error) -> &'static str {
    match reason.kind() {
        io::ErrorKind::PermissionDenied => "are you root or in the group fechter?",
        _ => "is fechterd running?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Body, Command, ErrorKind};

    #[test]
    fn replies_of_this_version_decode() {
        let reply = Reply::error(ErrorKind::DuplicateAddress, "eth0:10.0.0.20 is already in the pool");
        let line = serde_json::to_vec(&reply).unwrap();
        assert_eq!(decode_reply(&line).unwrap(), reply);
        assert_eq!(
            decode_reply(b"{\"version\":1,\"result\":\"ok\",\"body\":\"done\"}\n").unwrap(),
            Reply::ok(Body::Done)
        );
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let error = decode_reply(br#"{"version":2,"result":"ok","body":"something-new"}"#).unwrap_err();
        assert!(matches!(error, ClientError::VersionMismatch { daemon: 2 }), "{error}");
        assert_eq!(
            error.to_string(),
            "fechterd speaks control protocol version 2, this fechter speaks version 1; \
             use the fechter of the same release as fechterd"
        );
        for line in [&b"hello"[..], b"{}", b"{\"version\":1}", b"\xff\xfe"] {
            assert!(matches!(decode_reply(line), Err(ClientError::MalformedReply { .. })), "{line:?}");
        }
    }

    #[test]
    fn requests_are_single_lines() {
        let line = encode_request(&Request::new(Command::Up));
        assert_eq!(line, r#"{"version":1,"command":"up"}"#);
    }

    #[test]
    fn connect_errors_name_the_socket() {
        let socket = std::env::temp_dir().join(format!("fechter-cli-absent-{}.sock", std::process::id()));
        let error = exchange(&socket, &Request::new(Command::Status)).unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with(&format!("cannot connect to fechterd at {}: ", socket.display())));
        assert!(message.ends_with(" (is fechterd running?)"), "{message}");
    }
}
