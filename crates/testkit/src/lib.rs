//! What rkv's process-level tests (`tests/`), its benchmark and its fault
//! suite (`rkv-harness`) share: the daemons started on a port of their
//! choosing ([`daemon`]) and the flags they are given ([`flags`]), waits with deadlines ([`wait`]), the peers and
//! tools they run against ([`moto`], [`redis`], [`tmpfs`], a private CA in [`tls`]), and small
//! helpers for processes ([`process`]) and random workloads ([`rng`]).
//!
//! Nothing here ships: the `rkv` package declares its three binaries only.

pub mod daemon;
pub mod flags;
pub mod moto;
pub mod process;
pub mod redis;
pub mod rng;
pub mod tls;
pub mod tmpfs;
pub mod wait;

pub use daemon::Daemon;
pub use wait::{wait_for, wait_until, GENEROUS};
