//! Why a daemon refuses its configuration: the kind of mistake, and a
//! sentence for the operator. A refused configuration exits with code 2.

/// A configuration a daemon will not start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--backup-dir` is not a location rkv can use.
    #[error("{0}")]
    Location(String),
    /// Two directories that must stay apart contain one another.
    #[error("{0}")]
    Overlap(String),
    /// A flag's value is out of its range, or needs another flag.
    #[error("{0}")]
    Flag(String),
    /// A listener beyond this machine without a password (protected mode).
    #[error("{0}")]
    Unprotected(String),
    /// A TLS certificate, key or CA file that cannot be used.
    #[error("{0}")]
    Tls(String),
    /// The password given is unusable: empty, given twice, or in a file
    /// that cannot be read or that every user can read.
    #[error("{0}")]
    Password(String),
}
