//! A synchronous client for one bucket and prefix of an S3-compatible object
//! store, over `object_store` on a small runtime of its own.
//!
//! rkv's daemons are threads, not tasks: each call here blocks its caller
//! until the store answers. Only the requests rkv needs are here, each with
//! the outcome that carries meaning (created or already there, replaced or
//! lost the race, changed or not) as a value rather than an error.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, UpdateVersion,
};
use tokio::io::AsyncWriteExt;

use crate::backup::BackupLocation;
use crate::error::{Error, Result, StoreFailure};

use super::counting::CountingConnector;
pub use super::counting::RequestCounts;

/// Where the store is and how to reach it, from the `s3://` location and
/// the standard AWS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The prefix inside it, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// The endpoint URL (`--s3-endpoint`, `AWS_ENDPOINT_URL`); `None` is AWS.
    pub endpoint: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`), which most
    /// self-hosted stores need; otherwise virtual-hosted style.
    pub path_style: bool,
}

impl S3Config {
    /// `s3://BUCKET/PREFIX` with no endpoint, for the unit tests' in-memory
    /// stores.
    #[cfg(test)]
    pub(crate) fn in_memory(bucket: &str, prefix: &str) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: None,
            path_style: true,
        }
    }

    /// `s3://BUCKET/PREFIX` as given by the operator.
    pub fn url(&self) -> String {
        match self.prefix.as_str() {
            "" => format!("s3://{}", self.bucket),
            prefix => format!("s3://{}/{prefix}", self.bucket),
        }
    }
}

/// A local file to upload.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Its object name, relative to the prefix.
    pub name: String,
    /// The local file.
    pub path: std::path::PathBuf,
    /// Written only if absent: an object already there is the same file
    /// (a shared file's name says what it holds).
    pub create_only: bool,
}

/// The outcome of a conditional GET.
#[derive(Debug)]
pub enum Fetched {
    /// The object is as it was (`304 Not Modified`).
    Unchanged,
    /// There is no such object.
    Missing,
    /// The object's content and ETag.
    Object(Bytes, String),
}

/// The outcome of a GET with a size limit.
#[derive(Debug)]
pub enum Capped {
    /// The object's content, within the limit.
    Object(Bytes),
    /// The object's size, over the limit: its content was not read.
    TooLarge(u64),
}

/// The outcome of a conditional PUT.
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    /// Written; the new ETag.
    Written(String),
    /// Not written: the condition failed (the object exists, or is not the
    /// version named).
    Refused,
}

/// One object listed.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The key relative to the prefix (`meta/3`, `shared_checksum/…`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: std::time::SystemTime,
}

/// A bucket and prefix, with the runtime its requests run on.
pub struct Bucket {
    config: S3Config,
    /// S3 over HTTP, or for the tests `object_store`'s in-memory store
    /// (which honours the same conditional writes).
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    /// What was asked of the store so far.
    pub counts: Arc<RequestCounts>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.config.url())
    }
}

/// How long one request may take before it is abandoned and retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to try to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Bucket {
    /// A client for `config`; credentials and the region come from the
    /// standard AWS variables and `~/.aws/credentials`. Nothing is sent yet.
    pub fn new(config: S3Config) -> Result<Bucket> {
        let counts = Arc::new(RequestCounts::default());
        let mut builder = AmazonS3Builder::from_env()
            .with_http_connector(CountingConnector(Arc::clone(&counts)))
            .with_bucket_name(&config.bucket)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_allow_http(
                        config
                            .endpoint
                            .as_deref()
                            .is_some_and(|e| e.starts_with("http://")),
                    ),
            )
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            if let Some((key, secret, token)) = shared_credentials() {
                builder = builder
                    .with_access_key_id(key)
                    .with_secret_access_key(secret);
                if let Some(token) = token {
                    builder = builder.with_token(token);
                }
            }
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region(shared_region().unwrap_or_else(|| "us-east-1".into()));
        }
        let store: AmazonS3 = builder.build().map_err(|e| Error::Store {
            location: BackupLocation::S3(Box::new(config.clone())),
            context: "configure the client".into(),
            failure: StoreFailure::Misconfigured,
            source: Some(Box::new(e)),
        })?;
        Bucket::on(config, Arc::new(store), counts)
    }

    /// A bucket on `object_store`'s in-memory store, for the tests: the
    /// same requests, conditional writes included, with no server.
    pub fn in_memory(config: S3Config) -> Result<Bucket> {
        let store = Arc::new(object_store::memory::InMemory::new());
        Bucket::on(config, store, Arc::default())
    }

    /// A bucket on a store a test can cut this host off from.
    #[cfg(test)]
    pub fn cuttable(config: S3Config, store: Arc<super::cut::Cut>) -> Result<Bucket> {
        Bucket::on(config, store, Arc::default())
    }

    fn on(
        config: S3Config,
        store: Arc<dyn ObjectStore>,
        counts: Arc<RequestCounts>,
    ) -> Result<Bucket> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rkv-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the object store client's runtime", e))?;
        Ok(Bucket {
            config,
            store,
            runtime,
            counts,
        })
    }

    /// Another client of the same store (a second daemon on it, in a test).
    pub fn clone_client(&self) -> Result<Bucket> {
        Bucket::on(self.config.clone(), Arc::clone(&self.store), Arc::default())
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self) -> String {
        self.config.url()
    }

    /// The bucket and prefix, for errors and INFO.
    pub fn location(&self) -> BackupLocation {
        BackupLocation::S3(Box::new(self.config.clone()))
    }

    fn key(&self, name: &str) -> Key {
        match self.config.prefix.as_str() {
            "" => Key::from(name),
            prefix => Key::from(format!("{prefix}/{name}")),
        }
    }

    pub(super) fn error(&self, context: String, e: object_store::Error) -> Error {
        Error::Store {
            location: self.location(),
            context,
            failure: classify(&e),
            source: Some(Box::new(e)),
        }
    }

    /// Reads `name`, unless its ETag is still `etag`.
    pub fn get_if_changed(&self, name: &str, etag: Option<&str>) -> Result<Fetched> {
        let key = self.key(name);
        let options = GetOptions {
            if_none_match: etag.map(str::to_string),
            ..GetOptions::default()
        };
        let result = self.runtime.block_on(async {
            let got = self.store.get_opts(&key, options).await?;
            let etag = got.meta.e_tag.clone().unwrap_or_default();
            Ok::<_, object_store::Error>((got.bytes().await?, etag))
        });
        match result {
            Ok((bytes, etag)) => {
                self.counts
                    .bytes_down
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(Fetched::Object(bytes, etag))
            }
            Err(object_store::Error::NotModified { .. }) => Ok(Fetched::Unchanged),
            Err(object_store::Error::NotFound { .. }) => Ok(Fetched::Missing),
            Err(e) => Err(self.error(format!("read {name}"), e)),
        }
    }

    /// Reads `name`; `None` when there is no such object.
    pub fn get(&self, name: &str) -> Result<Option<Bytes>> {
        match self.get_if_changed(name, None)? {
            Fetched::Object(bytes, _) => Ok(Some(bytes)),
            Fetched::Missing | Fetched::Unchanged => Ok(None),
        }
    }

    /// Reads `name` if it holds at most `max` bytes (its size is known
    /// before its content is read, so a larger object costs no memory);
    /// `None` when there is no such object.
    pub fn get_at_most(&self, name: &str, max: u64) -> Result<Option<Capped>> {
        let key = self.key(name);
        let result = self.runtime.block_on(async {
            let got = self.store.get(&key).await?;
            if got.meta.size > max {
                return Ok(Capped::TooLarge(got.meta.size));
            }
            Ok::<_, object_store::Error>(Capped::Object(got.bytes().await?))
        });
        match result {
            Ok(capped) => {
                if let Capped::Object(bytes) = &capped {
                    self.counts
                        .bytes_down
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Ok(Some(capped))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(format!("read {name}"), e)),
        }
    }

    /// Whether `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool> {
        let key = self.key(name);
        match self.runtime.block_on(self.store.head(&key)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(format!("look up {name}"), e)),
        }
    }

    /// Writes `name`: over whatever is there (`Overwrite`), only if absent
    /// (`Create`), or only if it is still the version with the given ETag.
    pub fn put(&self, name: &str, body: Bytes, mode: Mode) -> Result<Put> {
        self.counts
            .bytes_up
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let key = self.key(name);
        let mode = match mode {
            Mode::Overwrite => PutMode::Overwrite,
            Mode::Create => PutMode::Create,
            Mode::Replace(etag) => PutMode::Update(UpdateVersion {
                e_tag: Some(etag),
                version: None,
            }),
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let result =
            self.runtime
                .block_on(self.store.put_opts(&key, PutPayload::from(body), options));
        match result {
            Ok(put) => Ok(Put::Written(put.e_tag.unwrap_or_default())),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(Put::Refused),
            Err(e) => Err(self.error(format!("write {name}"), e)),
        }
    }

    /// Uploads `files`, at most `parallel` at a time. Returns the bytes
    /// written.
    pub fn upload(&self, files: &[Upload], parallel: usize) -> Result<u64> {
        let uploads = files.iter().map(|file| async move {
            let Upload {
                name,
                path,
                create_only,
            } = file;
            let body = tokio::fs::read(path)
                .await
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            let size = body.len() as u64;
            let options = PutOptions {
                mode: if *create_only {
                    PutMode::Create
                } else {
                    PutMode::Overwrite
                },
                ..PutOptions::default()
            };
            match self
                .store
                .put_opts(&self.key(name), PutPayload::from(body), options)
                .await
            {
                Ok(_) => {
                    self.counts.bytes_up.fetch_add(size, Ordering::Relaxed);
                    Ok(size)
                }
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) if *create_only => Ok(0),
                Err(e) => Err(self.error(format!("upload {name}"), e)),
            }
        });
        self.runtime.block_on(async {
            futures::stream::iter(uploads)
                .buffer_unordered(parallel.max(1))
                .try_fold(0, |total, n| async move { Ok(total + n) })
                .await
        })
    }

    /// Downloads each `(name, local path)` of `files`, at most `parallel`
    /// at a time, into the path with a `.download` suffix; returns for each
    /// its size and crc32c, `None` for an object that is not there, or why
    /// it failed. One failure does not stop the others: what arrived whole
    /// is kept for the retry. The caller checks them and renames.
    pub fn download(
        &self,
        files: &[(String, std::path::PathBuf)],
        parallel: usize,
    ) -> Vec<Result<Option<(u64, u32)>>> {
        let downloads = files.iter().map(|(name, path)| async move {
            let got = match self.store.get(&self.key(name)).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.error(format!("download {name}"), e)),
            };
            let part = download_path(path);
            if let Some(dir) = part.parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            }
            let write_err = |e| Error::io(format!("write {}", part.display()), e);
            let mut file = tokio::fs::File::create(&part).await.map_err(write_err)?;
            let (mut size, mut crc) = (0u64, 0u32);
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    // Purged mid-download: the object is gone.
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(self.error(format!("download {name}"), e)),
                };
                crc = crc32c::crc32c_append(crc, &chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(write_err)?;
            }
            file.sync_all().await.map_err(write_err)?;
            self.counts.bytes_down.fetch_add(size, Ordering::Relaxed);
            Ok(Some((size, crc)))
        });
        self.runtime.block_on(async {
            futures::stream::iter(downloads)
                .buffered(parallel.max(1))
                .collect()
                .await
        })
    }

    /// Deletes `name`; an object already gone is not an error.
    pub fn delete(&self, name: &str) -> Result<()> {
        match self.runtime.block_on(self.store.delete(&self.key(name))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(format!("delete {name}"), e)),
        }
    }

    /// Deletes each of `names`, a thousand to a request (S3's
    /// DeleteObjects); objects already gone are not an error.
    pub fn delete_many(&self, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let keys: Vec<object_store::Result<Key>> =
            names.iter().map(|name| Ok(self.key(name))).collect();
        let result = self.runtime.block_on(async {
            let mut deleted = self
                .store
                .delete_stream(futures::stream::iter(keys).boxed());
            while let Some(one) = deleted.next().await {
                match one {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        result.map_err(|e| self.error(format!("delete {} objects", names.len()), e))
    }

    /// Every object under the prefix (`sub`, when given, narrows it).
    pub fn list(&self, sub: Option<&str>) -> Result<Vec<Listed>> {
        let base = match sub {
            Some(sub) => self.key(sub),
            None => Key::from(self.config.prefix.as_str()),
        };
        let strip = match self.config.prefix.as_str() {
            "" => String::new(),
            prefix => format!("{prefix}/"),
        };
        let result = self.runtime.block_on(async {
            let mut stream = self.store.list(Some(&base));
            let mut out = Vec::new();
            while let Some(meta) = stream.next().await {
                let meta = meta?;
                let key = meta.location.to_string();
                out.push(Listed {
                    name: key.strip_prefix(&strip).unwrap_or(&key).to_string(),
                    size: meta.size,
                    modified: meta.last_modified.into(),
                });
            }
            Ok::<_, object_store::Error>(out)
        });
        result.map_err(|e| self.error("list the objects".into(), e))
    }
}

/// How a PUT treats an object already at its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Replace it.
    Overwrite,
    /// Write only if there is none (`If-None-Match: *`).
    Create,
    /// Write only if it is still the version with this ETag (`If-Match`).
    Replace(String),
}

/// Where a download is written before it is checked and renamed.
pub fn download_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".download");
    path.with_file_name(name)
}

/// What a failed request means, from `object_store`'s error variant and,
/// for a request that failed on its way, the HTTP client's kind of failure
/// (found among the error's causes).
pub(super) fn classify(e: &object_store::Error) -> StoreFailure {
    use object_store::client::{HttpError, HttpErrorKind};
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => return StoreFailure::Denied,
        object_store::Error::NotFound { .. } => return StoreFailure::Missing,
        object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. } => {
            return StoreFailure::Unsupported
        }
        _ => {}
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        if let Some(http) = error.downcast_ref::<HttpError>() {
            return match http.kind() {
                HttpErrorKind::Connect => StoreFailure::Unreachable,
                HttpErrorKind::Timeout => StoreFailure::TimedOut,
                HttpErrorKind::Request | HttpErrorKind::Interrupted => StoreFailure::Broken,
                HttpErrorKind::Decode => StoreFailure::Unreadable,
                _ => StoreFailure::Failed,
            };
        }
        cause = error.source();
    }
    StoreFailure::Failed
}

/// The key, secret and session token of `AWS_PROFILE` (or `default`) in
/// the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
/// `~/.aws/credentials`), which `object_store` does not read itself.
fn shared_credentials() -> Option<(String, String, Option<String>)> {
    let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| Some(Path::new(&std::env::var_os("HOME")?).join(".aws/credentials")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let section = ini_section(&text, &profile);
    let get = |k: &str| {
        section
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    Some((
        get("aws_access_key_id")?,
        get("aws_secret_access_key")?,
        get("aws_session_token"),
    ))
}

/// The region of `AWS_PROFILE` (or `default`) in `~/.aws/config`
/// (`AWS_CONFIG_FILE`).
fn shared_region() -> Option<String> {
    let path = std::env::var_os("AWS_CONFIG_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| Some(Path::new(&std::env::var_os("HOME")?).join(".aws/config")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let name = match profile.as_str() {
        "default" => profile,
        other => format!("profile {other}"),
    };
    let section = ini_section(&text, &name);
    section
        .into_iter()
        .find(|(k, _)| k == "region")
        .map(|(_, v)| v)
}

/// The `key = value` lines of section `[name]` of an AWS INI file.
pub(super) fn ini_section(text: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = header.trim() == name;
        } else if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    out
}
