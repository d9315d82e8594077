//! The fechter command-line client and the control-socket protocol it shares with fechterd.
//!
//! The binary is a thin shell over these modules:
//! - [`proto`]: the request and reply types on the daemon's Unix socket (also used by fechterd).
//! - [`cli`]: the clap definitions, from which help, completions and the man page are generated.
//! - [`resource`]: parsing and validation of `IFNAME:ADDRESS[/PREFIX]`.
//! - [`output`]: the text printed for status, info and connectivity reports (pure functions).
//! - [`client`]: one request-reply exchange over the socket.
//! - [`keygen`]: new cluster keys for fechterd's `--cluster-key-file`.

pub mod cli;
pub mod client;
pub mod keygen;
pub mod output;
pub mod proto;
pub mod resource;
