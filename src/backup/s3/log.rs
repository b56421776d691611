//! The live tail's segments in the object store: `log/<first>.seg`, each
//! created only if absent (`If-None-Match: *`), so that a second master
//! never replaces a segment and a retry whose reply was lost finds its own
//! bytes there. A follower that keeps up asks for the next segment by name:
//! one GET per poll, and no LIST.

use bytes::Bytes;

use super::client::{Capped, Mode, Put};
use super::{Remote, S3Publisher, S3Reader};
use crate::error::{Error, Result};
use crate::tail::store::{
    parse_segment_file, segment_object, Committed, LogSink, LogSource, LOG_DIR, MAX_SEGMENT_BYTES,
};
use crate::tail::SegmentError;

impl Remote {
    fn read_segment(&self, first: u64) -> Result<Option<Vec<u8>>> {
        match self
            .bucket
            .get_at_most(&segment_object(first), MAX_SEGMENT_BYTES)?
        {
            None => Ok(None),
            Some(Capped::Object(bytes)) => Ok(Some(bytes.to_vec())),
            Some(Capped::TooLarge(_)) => Err(Error::BadSegment {
                name: self.segment_name(first),
                source: SegmentError::TooLarge(MAX_SEGMENT_BYTES),
            }),
        }
    }

    fn segments(&self) -> Result<Vec<u64>> {
        let mut firsts: Vec<u64> = self
            .bucket
            .list(Some(LOG_DIR))?
            .iter()
            .filter_map(|o| o.name.strip_prefix(LOG_DIR)?.strip_prefix('/'))
            .filter_map(parse_segment_file)
            .collect();
        firsts.sort_unstable();
        Ok(firsts)
    }

    fn segment_name(&self, first: u64) -> String {
        format!("{}/{}", self.bucket.url(), segment_object(first))
    }
}

/// [`LogSource`] through the type's [`Remote`].
macro_rules! log_through_remote {
    ($store:ty) => {
        impl LogSource for $store {
            fn read_segment(&self, first: u64) -> Result<Option<Vec<u8>>> {
                self.remote.read_segment(first)
            }

            fn segments(&self) -> Result<Vec<u64>> {
                self.remote.segments()
            }

            fn segment_name(&self, first: u64) -> String {
                self.remote.segment_name(first)
            }
        }
    };
}

log_through_remote!(S3Reader);
log_through_remote!(S3Publisher);

impl LogSink for S3Publisher {
    fn write_segment(&self, first: u64, bytes: &[u8]) -> Result<Committed> {
        self.check_fenced()?;
        let name = segment_object(first);
        let body = Bytes::copy_from_slice(bytes);
        match self.remote.bucket.put(&name, body, Mode::Create)? {
            Put::Written(_) => Ok(Committed::New),
            // Its own write whose reply was lost, retried; or another
            // master's segment: the bytes tell which.
            Put::Refused => match self.remote.read_segment(first)? {
                Some(there) if there == bytes => Ok(Committed::AlreadyThere),
                Some(_) => Err(Error::SegmentExists {
                    name: self.remote.segment_name(first),
                }),
                // Refused, then gone: purged or removed between the two
                // requests. Nothing was written; the next step tries again.
                None => Err(Error::Store {
                    location: self.remote.bucket.location(),
                    context: format!("write {name}"),
                    failure: crate::error::StoreFailure::Raced,
                    source: None,
                }),
            },
        }
    }

    fn remove_segment(&self, first: u64) -> Result<()> {
        self.remote.bucket.delete(&segment_object(first))
    }
}
