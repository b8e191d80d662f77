//! The S3 cache of generated codes. Equal requests share one object: the key is a hash of the
//! app id and the normalised parameters, under the `codes/` prefix the bucket's lifecycle rule
//! expires. A cache failure never fails a request: it is logged and WeChat serves instead.
//!
//! In front of S3, the codes this instance served lately, within a byte budget
//! (`CODE_CACHE_MEMORY_MB`): a code asked for again (a shop's share code, a poster's) is answered
//! without an S3 call. A code for given parameters never changes, so a kept copy is never stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::aws::S3;
use crate::wechat::Image;

/// The prefix of every cached code (the template's lifecycle rule expires objects under it).
pub const PREFIX: &str = "codes/";

#[derive(Clone)]
pub struct CodeCache {
    client: S3,
    bucket: String,
    recent: Arc<Recent>,
}

impl CodeCache {
    /// Opens a connection to the bucket's endpoint ahead of the first call (a cold start's).
    pub fn open_ahead(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.client.open_ahead(&self.bucket)
    }

    /// Without codes kept in memory ([`CodeCache::keeping`] adds them).
    pub fn new(client: S3, bucket: impl Into<String>) -> Self {
        CodeCache {
            client,
            bucket: bucket.into(),
            recent: Arc::new(Recent::new(0)),
        }
    }

    /// Keeps the latest codes served, up to `bytes` of images, in this process.
    pub fn keeping(mut self, bytes: usize) -> Self {
        self.recent = Arc::new(Recent::new(bytes));
        self
    }

    /// `codes/<sha256(appid \n canonical params)>`.
    pub fn key(appid: &str, canonical_params: &str) -> String {
        let digest = crate::ids::sha256_hex(format!("{appid}\n{canonical_params}").as_bytes());
        format!("{PREFIX}{digest}")
    }

    /// The cached image, or `None` on a miss, any S3 failure, or an object that is not a PNG or
    /// JPEG by its bytes (each logged but the miss).
    pub async fn get(&self, key: &str) -> Option<Image> {
        if let Some(image) = self.recent.get(key) {
            return Some(image);
        }
        let image =
            crate::scope::waiting_on(crate::scope::Waiting::Store, self.get_inner(key)).await?;
        self.recent.put(key, &image);
        Some(image)
    }

    async fn get_inner(&self, key: &str) -> Option<Image> {
        let bytes = match self.client.get_object(&self.bucket, key).await {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "code cache read failed; asking WeChat");
                return None;
            }
        };
        match Image::from_bytes(bytes) {
            Ok(image) => Some(image),
            Err(bytes) => {
                tracing::warn!(
                    bytes = bytes.len(),
                    "cached code is not an image; asking WeChat"
                );
                None
            }
        }
    }

    pub async fn put(&self, key: &str, image: &Image) -> Result<(), String> {
        self.recent.put(key, image);
        self.client
            .put_object(
                &self.bucket,
                key,
                image.bytes.clone(),
                image.content_type,
                "public, max-age=31536000, immutable",
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// Stores the image without holding up the answer for long: the upload runs concurrently and
    /// is awaited at most `wait`; a slower one goes on in the background (in Lambda it may finish
    /// at the next thaw or be lost, which only costs a later cache miss).
    pub async fn put_in_background(&self, key: String, image: Image, wait: Duration) {
        let cache = self.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = cache.put(&key, &image).await {
                tracing::warn!(error = %e, "code cache write failed");
            }
        });
        let _ = tokio::time::timeout(wait, task).await;
    }

    /// Creates the bucket if it is missing (local server and tests; in AWS the template does).
    pub async fn ensure_bucket(&self) -> Result<(), String> {
        match self.client.bucket_exists(&self.bucket).await {
            Ok(true) => Ok(()),
            _ => self
                .client
                .create_bucket(&self.bucket)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// The latest codes served, least recently used first out once their bytes pass the budget.
struct Recent {
    budget: usize,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// Each code with the tick of its last use.
    images: HashMap<String, (Image, u64)>,
    bytes: usize,
    tick: u64,
}

impl Recent {
    fn new(budget: usize) -> Self {
        Recent {
            budget,
            kept: Mutex::new(Kept::default()),
        }
    }

    fn get(&self, key: &str) -> Option<Image> {
        if self.budget == 0 {
            return None;
        }
        let mut kept = self.kept.lock().expect("not poisoned");
        kept.tick += 1;
        let tick = kept.tick;
        let (image, used) = kept.images.get_mut(key)?;
        *used = tick;
        Some(image.clone())
    }

    fn put(&self, key: &str, image: &Image) {
        let size = image.bytes.len();
        if size > self.budget {
            return;
        }
        let mut kept = self.kept.lock().expect("not poisoned");
        kept.tick += 1;
        let tick = kept.tick;
        if let Some((_, used)) = kept.images.get_mut(key) {
            *used = tick;
            return;
        }
        // Out with the least recently used until the new one fits (a miss, so rare: a scan).
        while kept.bytes + size > self.budget {
            let Some(oldest) = kept
                .images
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((gone, _)) = kept.images.remove(&oldest) {
                kept.bytes -= gone.bytes.len();
            }
        }
        kept.bytes += size;
        // A copy of its own: the image's bytes may be a view into a larger buffer (the HTTP
        // answer's), which would be kept whole and not counted.
        let own = Image {
            content_type: image.content_type,
            bytes: bytes::Bytes::copy_from_slice(&image.bytes),
        };
        kept.images.insert(key.to_string(), (own, tick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(len: usize) -> Image {
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.resize(len, 0);
        Image::from_bytes(bytes.into()).expect("a PNG by its bytes")
    }

    #[test]
    fn the_least_recently_used_code_goes_first_and_the_budget_holds() {
        let recent = Recent::new(300);
        recent.put("a", &image(100));
        recent.put("b", &image(100));
        recent.put("c", &image(100));
        // a used again: b is now the least recently used
        assert!(recent.get("a").is_some());
        recent.put("d", &image(100));
        assert!(recent.get("b").is_none());
        for k in ["a", "c", "d"] {
            assert_eq!(recent.get(k).map(|i| i.bytes.len()), Some(100), "{k}");
        }
        // one larger code pushes out as many as it needs
        recent.put("e", &image(250));
        assert!(recent.get("e").is_some());
        assert_eq!(recent.kept.lock().unwrap().bytes, 250);
        // a code larger than the whole budget is not kept, and keeps what is there
        recent.put("f", &image(301));
        assert!(recent.get("f").is_none());
        assert!(recent.get("e").is_some());
    }

    #[test]
    fn a_budget_of_nothing_keeps_nothing() {
        let recent = Recent::new(0);
        recent.put("a", &image(10));
        assert!(recent.get("a").is_none());
    }
}
