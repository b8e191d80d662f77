//! The S3 cache of generated codes. Equal requests share one object: the key is a hash of the
//! app id and the normalised parameters, under the `codes/` prefix the bucket's lifecycle rule
//! expires. A cache failure never fails a request: it is logged and WeChat serves instead.

use std::time::Duration;

use crate::aws::S3;
use crate::wechat::Image;

/// The prefix of every cached code (the template's lifecycle rule expires objects under it).
pub const PREFIX: &str = "codes/";

#[derive(Clone)]
pub struct CodeCache {
    client: S3,
    bucket: String,
}

impl CodeCache {
    pub fn new(client: S3, bucket: impl Into<String>) -> Self {
        CodeCache {
            client,
            bucket: bucket.into(),
        }
    }

    /// `codes/<sha256(appid \n canonical params)>`.
    pub fn key(appid: &str, canonical_params: &str) -> String {
        let digest = crate::ids::sha256_hex(format!("{appid}\n{canonical_params}").as_bytes());
        format!("{PREFIX}{digest}")
    }

    /// The cached image, or `None` on a miss, any S3 failure, or an object that is not a PNG or
    /// JPEG by its bytes (each logged but the miss).
    pub async fn get(&self, key: &str) -> Option<Image> {
        crate::scope::waiting_on(crate::scope::Waiting::Store, self.get_inner(key)).await
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
