//! Process-level tests: they start the real binaries on temp dirs and check
//! what a user sees (output, exit codes, error sentences).

mod cli;
mod clients;
mod compat;
mod faults;
mod follower;
mod freshness;
mod master;
mod metrics;
mod netns;
mod promote;
mod s3;
mod scripts;
mod tail;
mod tls;
mod users;
mod util;

// redis-server (the differential tests' peer), the differential test's
// random source, the S3 server the object store tests run against, and
// the small disk of the full-disk tests.
use rkv_testkit::{moto, redis, rng, tmpfs};
