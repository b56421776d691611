//! [`RequestCounts`]: every HTTP request the object store client sends,
//! counted as it goes out (retries included), through an HTTP service that
//! wraps `object_store`'s own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::ClientOptions;

/// HTTP requests sent, by kind, every retry included (counted as they go
/// out, by [`Counting`]), for the metrics, the benchmark and the logs.
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// GET and HEAD requests.
    pub get: AtomicU64,
    /// PUT requests, and the POSTs of a multipart upload.
    pub put: AtomicU64,
    /// LIST requests (pages).
    pub list: AtomicU64,
    /// DELETE requests, and batch deletes.
    pub delete: AtomicU64,
    /// Requests that failed: no answer, 5xx, or 429 (the ones the client
    /// retries).
    pub failed: AtomicU64,
    /// Bytes uploaded.
    pub bytes_up: AtomicU64,
    /// Bytes downloaded.
    pub bytes_down: AtomicU64,
    /// When the store last answered anything, in milliseconds after
    /// [`RequestCounts::since`]; 0 before the first answer.
    answered_ms: AtomicU64,
    since: std::sync::OnceLock<Instant>,
}

impl RequestCounts {
    fn epoch(&self) -> Instant {
        *self.since.get_or_init(Instant::now)
    }

    /// Time since the store last answered a request (with anything, even
    /// an error status); `None` before the first answer.
    pub fn since_answer(&self) -> Option<Duration> {
        match self.answered_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.epoch()
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }

    fn answered(&self) {
        let ms = self.epoch().elapsed().as_millis() as u64;
        self.answered_ms.fetch_max(ms.max(1), Ordering::Relaxed);
    }
}

/// The HTTP client under `object_store`, counting each request as it is
/// sent: the client retries on its own, and a store under strain must be
/// seen to be asked harder.
#[derive(Debug)]
struct Counting {
    inner: HttpClient,
    counts: Arc<RequestCounts>,
}

#[async_trait::async_trait]
impl HttpService for Counting {
    async fn call(&self, req: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        let counter = match (req.method().as_str(), req.uri().query().unwrap_or("")) {
            ("GET", query) if query.contains("list-type") => &self.counts.list,
            ("GET" | "HEAD", _) => &self.counts.get,
            ("DELETE", _) => &self.counts.delete,
            ("POST", query) if query.contains("delete") => &self.counts.delete,
            _ => &self.counts.put,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let result = self.inner.execute(req).await;
        match &result {
            Ok(reply) => {
                self.counts.answered();
                let status = reply.status();
                if status.is_server_error() || status.as_u16() == 429 {
                    self.counts.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }
}

/// Makes `object_store`'s usual client, wrapped in [`Counting`].
#[derive(Debug)]
pub(super) struct CountingConnector(pub(super) Arc<RequestCounts>);

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Counting {
            inner: ReqwestConnector::default().connect(options)?,
            counts: Arc::clone(&self.0),
        }))
    }
}
