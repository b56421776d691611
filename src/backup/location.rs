//! `--backup-dir`: a local (or NFS) directory, or `s3://BUCKET/PREFIX` on an
//! S3-compatible object store, with the flags that say how to reach the
//! store.

use std::fmt;
use std::path::{Path, PathBuf};

use super::s3::S3Config;

/// Where the backups live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupLocation {
    /// A directory.
    Dir(PathBuf),
    /// A bucket and prefix of an object store (boxed: a location travels
    /// in errors, which stay small).
    S3(Box<S3Config>),
}

impl fmt::Display for BackupLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupLocation::Dir(path) => write!(f, "{}", path.display()),
            BackupLocation::S3(config) => f.write_str(&config.url()),
        }
    }
}

/// How to reach an object store; shared by the daemons and the CLI.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArgs {
    /// The object store's endpoint URL, for an `s3://` backup location on a
    /// store other than AWS S3 (MinIO, Ceph RGW, Garage, R2), e.g.
    /// http://10.0.0.5:9000. Default: AWS_ENDPOINT_URL_S3, then
    /// AWS_ENDPOINT_URL, else AWS S3 itself. Credentials and the region come
    /// from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_REGION or
    /// ~/.aws/credentials and ~/.aws/config (AWS_PROFILE).
    #[arg(long = "s3-endpoint", env = "RKV_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// Address the bucket in the path (http://host/bucket/key), as most
    /// self-hosted stores need, rather than in the host name
    /// (http://bucket.host/key). Default: path style with --s3-endpoint or
    /// AWS_ENDPOINT_URL, virtual-hosted style on AWS.
    #[arg(long = "s3-path-style", env = "RKV_S3_PATH_STYLE", value_name = "BOOL")]
    pub s3_path_style: Option<bool>,
}

impl StoreArgs {
    /// Reads `--backup-dir`: `s3://BUCKET[/PREFIX]`, `file://PATH`, or a
    /// path. Any other `scheme://` is an error, so that a mistyped URL never
    /// becomes a directory of that name.
    pub fn location(&self, raw: &Path) -> Result<BackupLocation, String> {
        let text = raw.to_string_lossy();
        let Some((scheme, rest)) = split_scheme(&text) else {
            return Ok(BackupLocation::Dir(raw.to_path_buf()));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => Ok(BackupLocation::Dir(PathBuf::from(rest))),
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if !valid_bucket(bucket) {
                    return Err(format!(
                        "--backup-dir {text}: {bucket:?} is not a bucket name (3 to 63 lowercase \
                         letters, digits, dots and hyphens)"
                    ));
                }
                let prefix = prefix.trim_matches('/');
                if prefix
                    .split('/')
                    .any(|part| part.is_empty() || part == "." || part == "..")
                    && !prefix.is_empty()
                {
                    return Err(format!(
                        "--backup-dir {text}: the prefix {prefix:?} has an empty, `.` or `..` part"
                    ));
                }
                let endpoint = self.s3_endpoint.clone().or_else(|| {
                    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                        .iter()
                        .find_map(|v| std::env::var(v).ok().filter(|e| !e.is_empty()))
                });
                if let Some(endpoint) = &endpoint {
                    if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                        return Err(format!(
                            "the object store endpoint {endpoint:?} is not an http:// or https:// URL"
                        ));
                    }
                }
                Ok(BackupLocation::S3(Box::new(S3Config {
                    bucket: bucket.to_string(),
                    prefix: prefix.to_string(),
                    path_style: self.s3_path_style.unwrap_or(endpoint.is_some()),
                    endpoint,
                })))
            }
            other => Err(format!(
                "--backup-dir {text}: unknown scheme {other}://; give a directory path or \
                 s3://BUCKET/PREFIX"
            )),
        }
    }
}

/// `("s3", "bucket/prefix")` for `s3://bucket/prefix`; `None` for a path.
fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some((scheme, rest))
}

/// S3's bucket naming rules, loosely: what a store could accept.
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BackupLocation, String> {
        let args = StoreArgs {
            s3_endpoint: Some("http://127.0.0.1:9000".into()),
            s3_path_style: None,
        };
        args.location(Path::new(text))
    }

    #[test]
    fn paths_urls_and_unknown_schemes() {
        assert_eq!(parse("/b").unwrap(), BackupLocation::Dir("/b".into()));
        assert_eq!(parse("rel/b").unwrap(), BackupLocation::Dir("rel/b".into()));
        assert_eq!(
            parse("file:///b").unwrap(),
            BackupLocation::Dir("/b".into())
        );
        let BackupLocation::S3(s3) = parse("s3://my-bucket/a/b/").unwrap() else {
            panic!("not s3");
        };
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("my-bucket", "a/b")
        );
        assert!(s3.path_style, "a custom endpoint defaults to path style");
        assert_eq!(s3.url(), "s3://my-bucket/a/b");
        let BackupLocation::S3(s3) = parse("s3://my-bucket").unwrap() else {
            panic!("not s3");
        };
        assert_eq!(s3.prefix, "");
        let err = parse("gs://bucket/x").unwrap_err();
        assert!(err.contains("unknown scheme gs://"), "{err}");
        assert!(parse("s3://Bad_Bucket/x")
            .unwrap_err()
            .contains("not a bucket name"));
        assert!(parse("s3://bucket/a//b").unwrap_err().contains("empty"));
        assert!(parse("s3://bucket/../b").is_err());
    }
}
