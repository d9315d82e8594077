//! The control socket: newline-delimited JSON requests and replies as defined by
//! [`fechter_cli::proto`].
//!
//! Each connection may send any number of requests. A line that is not a valid request, is in
//! another protocol version or is too long gets an error reply and the connection stays usable.
//!
//! Access: the socket has mode 0666, so every local user can connect and run the read-only
//! commands (`status`, `info`, `connectivity`), which show the cluster's state and no secret.
//! State-changing commands are accepted only from root or a member of the admin group (`fechter`
//! unless `--admin-group` names another), decided per request from the peer's credentials as the
//! kernel recorded them when it connected (`SO_PEERCRED`), never from anything the peer sends.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fechter_cli::proto::{Command, ErrorKind, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Request};
use thiserror::Error;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// The group whose members may change state over the socket unless `--admin-group` names another.
pub const DEFAULT_ADMIN_GROUP: &str = "fechter";

/// The mode of the control socket: anyone may connect, the credential check guards every change.
pub const SOCKET_MODE: u32 = 0o666;

/// A validated command on its way to the daemon, with the channel for its reply.
#[derive(Debug)]
pub struct ControlRequest {
    /// What the peer asked for.
    pub command: Command,
    /// Where the daemon sends the reply.
    pub reply: oneshot::Sender<Reply>,
}

/// A failure to set up the control socket.
#[derive(Debug, Error)]
pub enum ControlError {
    /// A file system or socket operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("another fechterd is already listening on {}", .0.display())]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("{} exists and is not a socket; refusing to remove it", .0.display())]
    NotASocket(PathBuf),
}

/// Binds the control socket at `path`: creates the parent directory (0755) if needed, replaces a
/// stale socket file and sets [`SOCKET_MODE`].
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io_error = |action: &'static str| {
        let path = path.to_owned();
        move |source| ControlError::Io { action, path, source }
    };
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_error("creating the directory of"))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(ControlError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io_error("removing the stale socket"))?;
        }
        Ok(_) => return Err(ControlError::NotASocket(path.to_owned())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(ControlError::Io { action: "inspecting", path: path.to_owned(), source }),
    }
    let listener = UnixListener::bind(path).map_err(io_error("binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io_error("setting the mode of"))?;
    Ok(listener)
}

/// Accepts connections forever, handing every valid request to `requests`; state changes only
/// from root or members of `admin_group`.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<ControlRequest>, admin_group: String) {
    let admin_group: Arc<str> = admin_group.into();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let requests = requests.clone();
                let admin_group = Arc::clone(&admin_group);
                tokio::spawn(async move {
                    if let Err(error) = handle_connection(stream, requests, &admin_group).await {
                        debug!(%error, "control connection ended with an error");
                    }
                });
            }
            Err(error) => {
                // Running out of file descriptors is transient; back off instead of spinning.
                warn!(%error, "accepting a control connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle_connection(
    stream: UnixStream,
    requests: mpsc::Sender<ControlRequest>,
    admin_group: &str,
) -> io::Result<()> {
    let credentials = stream.peer_cred()?;
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let mut line = Vec::new();
    loop {
        let reply = match read_line(&mut reader, &mut line).await? {
            LineRead::End => return Ok(()),
            LineRead::TooLong => Reply::error(
                ErrorKind::MalformedRequest,
                format!("request longer than {MAX_REQUEST_BYTES} bytes"),
            ),
            LineRead::Line if line.iter().all(u8::is_ascii_whitespace) => continue,
            LineRead::Line => match decode_request(&line) {
                Err(reply) => *reply,
                Ok(request) => {
                    let allowed = !request.command.changes_state()
                        || may_change_state(
                            credentials.uid(),
                            credentials.gid(),
                            credentials.pid(),
                            admin_group,
                        );
                    if allowed {
                        dispatch(request.command, &requests).await
                    } else {
                        warn!(
                            uid = credentials.uid(),
                            gid = credentials.gid(),
                            pid = credentials.pid(),
                            command = ?request.command,
                            "refused a state change from a peer that is neither root nor in the admin group"
                        );
                        Reply::error(
                            ErrorKind::PermissionDenied,
                            format!(
                                "permission denied: only root or members of the group {admin_group:?} may change state"
                            ),
                        )
                    }
                }
            },
        };
        let mut bytes = serde_json::to_vec(&reply).map_err(io::Error::other)?;
        bytes.push(b'\n');
        write_half.write_all(&bytes).await?;
    }
}

async fn dispatch(command: Command, requests: &mpsc::Sender<ControlRequest>) -> Reply {
    let (reply, answer) = oneshot::channel();
    if requests.send(ControlRequest { command, reply }).await.is_err() {
        return Reply::error(ErrorKind::Internal, "the daemon is shutting down");
    }
    answer.await.unwrap_or_else(|_| Reply::error(ErrorKind::Internal, "the daemon is shutting down"))
}

/// The outcome of reading one request line.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// A complete line (without the newline) is in the buffer.
    Line,
    /// The line was longer than [`MAX_REQUEST_BYTES`] and was discarded.
    TooLong,
    /// The peer closed the connection.
    End,
}

/// Reads one line into `line`, never buffering more than [`MAX_REQUEST_BYTES`].
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, line: &mut Vec<u8>) -> io::Result<LineRead> {
    line.clear();
    let mut too_long = false;
    let mut seen_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (seen_any, too_long) {
                (false, _) => LineRead::End,
                (true, true) => LineRead::TooLong,
                (true, false) => LineRead::Line,
            });
        }
        seen_any = true;
        let newline = available.iter().position(|byte| *byte == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        if !too_long {
            if line.len() + chunk.len() > MAX_REQUEST_BYTES {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let consumed = newline.map_or(available.len(), |position| position + 1);
        reader.consume(consumed);
        if newline.is_some() {
            return Ok(if too_long { LineRead::TooLong } else { LineRead::Line });
        }
    }
}

/// Decodes one request line, or returns the error reply it deserves (boxed, because a reply is
/// large and this is the rare path).
pub fn decode_request(line: &[u8]) -> Result<Request, Box<Reply>> {
    let malformed = |message: String| Box::new(Reply::error(ErrorKind::MalformedRequest, message));
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|error| malformed(format!("not a JSON request: {error}")))?;
    let version = value
        .as_object()
        .ok_or_else(|| malformed("a request must be a JSON object".to_owned()))?
        .get("version")
        .ok_or_else(|| malformed("the request has no \"version\"".to_owned()))?;
    if version.as_u64() != Some(u64::from(PROTOCOL_VERSION)) {
        return Err(Box::new(Reply::error(
            ErrorKind::UnsupportedVersion,
            format!(
                "protocol version {version} is not supported; this daemon speaks version {PROTOCOL_VERSION}"
            ),
        )));
    }
    serde_json::from_value(value).map_err(|error| malformed(format!("invalid request: {error}")))
}

/// Whether the peer may run state-changing commands: root, or in `admin_group` by its primary
/// group, its process's supplementary groups, or the group's member list.
fn may_change_state(uid: u32, gid: u32, pid: Option<i32>, admin_group: &str) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(group) =
        std::fs::read_to_string("/etc/group").ok().and_then(|text| find_group(&text, admin_group))
    else {
        return false;
    };
    if gid == group.gid {
        return true;
    }
    // SO_PEERCRED carries no supplementary groups, so they are read from the peer's process. The
    // pid may have exited and been reused since it connected: its groups count only while the
    // process there still has the peer's effective uid, so another user's process never lends its
    // groups.
    let process_groups = pid
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter(|text| effective_uid(text) == Some(uid))
        .map(|text| supplementary_groups(&text))
        .unwrap_or_default();
    if process_groups.contains(&group.gid) {
        return true;
    }
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| user_name(&text, uid))
        .is_some_and(|name| group.members.contains(&name))
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    gid: u32,
    members: Vec<String>,
}

/// Finds group `name` in the text of `/etc/group`.
fn find_group(text: &str, name: &str) -> Option<GroupEntry> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let gid = fields.nth(1)?.trim().parse().ok()?;
        let members = fields
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|member| !member.is_empty())
            .map(str::to_owned)
            .collect();
        Some(GroupEntry { gid, members })
    })
}

/// The user name of `uid` in the text of `/etc/passwd`.
fn user_name(text: &str, uid: u32) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let entry_uid: u32 = fields.nth(1)?.trim().parse().ok()?;
        (entry_uid == uid).then(|| name.to_owned())
    })
}

/// The effective uid (the one `SO_PEERCRED` reports) in the text of `/proc/<pid>/status`, whose
/// `Uid:` line lists the real, effective, saved and file system uids.
fn effective_uid(text: &str) -> Option<u32> {
    text.lines().find_map(|line| line.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// The supplementary groups in the text of `/proc/<pid>/status`.
fn supplementary_groups(text: &str) -> Vec<u32> {
    text.lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| groups.split_whitespace().filter_map(|gid| gid.parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fechter_cli::proto::{Body, Outcome};

    fn kind(reply: &Reply) -> Option<ErrorKind> {
        match &reply.outcome {
            Outcome::Error { kind, .. } => Some(*kind),
            Outcome::Ok(_) => None,
        }
    }

    #[test]
    fn requests_decode_or_get_the_right_error() {
        let ok = decode_request(br#"{"version":1,"command":"up"}"#).unwrap();
        assert_eq!(ok.command, Command::Up);
        let cases: [(&[u8], ErrorKind); 7] = [
            (b"not json", ErrorKind::MalformedRequest),
            (b"[1,2]", ErrorKind::MalformedRequest),
            (br#"{"command":"up"}"#, ErrorKind::MalformedRequest),
            (br#"{"version":2,"command":"up"}"#, ErrorKind::UnsupportedVersion),
            (br#"{"version":"1","command":"up"}"#, ErrorKind::UnsupportedVersion),
            (br#"{"version":1,"command":"reboot"}"#, ErrorKind::MalformedRequest),
            (
                br#"{"version":1,"command":"add-address","interface":"eth0","address":"10.0.0.300"}"#,
                ErrorKind::MalformedRequest,
            ),
        ];
        for (line, expected) in cases {
            let reply = decode_request(line).unwrap_err();
            assert_eq!(kind(&reply), Some(expected), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn group_and_user_lookups() {
        let group = "root:x:0:\nfechter:x:998:alice, bob\nother:x:5\n";
        assert_eq!(
            find_group(group, "fechter"),
            Some(GroupEntry { gid: 998, members: vec!["alice".into(), "bob".into()] })
        );
        assert_eq!(find_group(group, "other"), Some(GroupEntry { gid: 5, members: vec![] }));
        assert_eq!(find_group(group, "missing"), None);
        assert_eq!(find_group("fechter:x:notanumber:\n", "fechter"), None);
        let passwd = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(user_name(passwd, 7), None);
        let status = "Name:\tcat\nUid:\t0\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\nGroups:\t4 24 998 \nVmPeak: 1\n";
        assert_eq!(supplementary_groups(status), vec![4, 24, 998]);
        assert_eq!(effective_uid(status), Some(1000));
        assert!(supplementary_groups("Name: x\n").is_empty());
        assert_eq!(effective_uid("Name: x\nUid:\t0\tnope\n"), None);
    }

    #[tokio::test]
    async fn long_lines_are_refused_and_the_connection_continues() {
        let mut input = vec![b'x'; MAX_REQUEST_BYTES + 10];
        input.extend_from_slice(b"\n{\"a\":1}\nlast");
        let mut reader = BufReader::with_capacity(1024, &input[..]);
        let mut line = Vec::new();
        assert_eq!(read_line(&mut reader, &mut line).await.unwrap(), LineRead::TooLong);
        assert_eq!(read_line(&mut reader, &mut line).await.unwrap(), LineRead::Line);
        assert_eq!(line, b"{\"a\":1}");
        assert_eq!(read_line(&mut reader, &mut line).await.unwrap(), LineRead::Line);
        assert_eq!(line, b"last");
        assert_eq!(read_line(&mut reader, &mut line).await.unwrap(), LineRead::End);
    }

    #[tokio::test]
    async fn a_served_socket_answers_and_survives_bad_lines() {
        let dir = std::env::temp_dir().join(format!("fechterd-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("test.sock");
        let listener = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        assert!(matches!(bind(&path).await, Err(ControlError::InUse(_))));

        let (sender, mut receiver) = mpsc::channel(4);
        let server = tokio::spawn(serve(listener, sender, DEFAULT_ADMIN_GROUP.to_owned()));
        let daemon = tokio::spawn(async move {
            while let Some(request) = receiver.recv().await {
                let _ = request.reply.send(Reply::ok(Body::Done));
            }
        });
        let stream = UnixStream::connect(&path).await.unwrap();
        let (read_half, mut write_half) = stream.into_split();
        let mut lines = BufReader::new(read_half).lines();
        write_half.write_all(b"garbage\n{\"version\":1,\"command\":\"down\"}\n").await.unwrap();
        let first: Reply = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(kind(&first), Some(ErrorKind::MalformedRequest));
        let second: Reply = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(second, Reply::ok(Body::Done));
        server.abort();
        daemon.abort();
        drop(write_half);
        // A socket left behind by a dead daemon is replaced.
        drop(bind(&path).await.unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
