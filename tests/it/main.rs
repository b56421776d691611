//! Process-level tests: they start the real binaries on temp dirs and check
//! what a user sees (output, exit codes, error sentences).

mod cli;
mod clients;
mod compat;
mod faults;
mod follower;
mod master;
mod metrics;
mod netns;
mod promote;
// redis-server, the differential tests' peer.
#[path = "../../bin/common/redis.rs"]
mod redis;
// The differential test's random source.
#[path = "../../bin/common/rng.rs"]
mod rng;
mod s3;
// The S3 server the object store tests run against.
#[path = "../../bin/common/moto.rs"]
mod moto;
mod scripts;
// The fault suite's small disk.
#[path = "../../bin/common/tmpfs.rs"]
mod tmpfs;
mod util;
