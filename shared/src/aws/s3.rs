//! The four S3 calls the project makes (GetObject, PutObject, HeadBucket, CreateBucket), as signed
//! REST requests.

use bytes::Bytes;
use http::Method;

use super::AwsError;
use super::signed::{Parsed, Request, Signed, xml_element};

#[derive(Clone)]
pub struct S3 {
    signed: Signed,
}

impl S3 {
    pub(super) fn new(signed: Signed) -> Self {
        S3 { signed }
    }

    /// Opens a connection to `bucket`'s endpoint ahead of the first call (a cold start's).
    pub fn open_ahead(
        &self,
        bucket: &str,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let ahead = self
            .url(bucket, "")
            .ok()
            .map(|u| self.signed.open_ahead(u, 1));
        async move {
            if let Some(ahead) = ahead {
                ahead.await
            }
        }
    }

    /// Path style on a custom endpoint (and for bucket names with dots, which a virtual host's
    /// certificate does not cover); virtual-hosted otherwise, as AWS recommends.
    fn url(&self, bucket: &str, key: &str) -> Result<reqwest::Url, AwsError> {
        let key = encode_key(key);
        let url = match self.signed.endpoint() {
            Some(e) => format!("{e}/{bucket}/{key}"),
            None if bucket.contains('.') => {
                format!("{}/{bucket}/{key}", self.signed.regional_url("s3"))
            }
            None => format!(
                "{}/{key}",
                self.signed.regional_url(&format!("{bucket}.s3"))
            ),
        };
        reqwest::Url::parse(&url).map_err(|e| AwsError {
            old_item: None,
            service: "s3",
            status: None,
            code: "request".to_string(),
            message: format!("{url}: {e}"),
        })
    }

    async fn send(
        &self,
        method: Method,
        url: Result<reqwest::Url, AwsError>,
        headers: &[(&'static str, &str)],
        body: Bytes,
    ) -> Result<super::signed::Reply, AwsError> {
        self.signed
            .send(
                Request {
                    method,
                    url: &url?,
                    headers,
                    body,
                },
                parse_error,
            )
            .await
    }

    /// The object's bytes, or `None` if there is no such key.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Bytes>, AwsError> {
        match self
            .send(Method::GET, self.url(bucket, key), &[], Bytes::new())
            .await
        {
            Ok(reply) => Ok(Some(reply.body)),
            Err(e) if e.code == "NoSuchKey" => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: &str,
        cache_control: &str,
    ) -> Result<(), AwsError> {
        let headers = [
            ("content-type", content_type),
            ("cache-control", cache_control),
        ];
        self.send(Method::PUT, self.url(bucket, key), &headers, body)
            .await
            .map(|_| ())
    }

    /// True if the object exists (a HEAD: its bytes are not read).
    pub async fn object_exists(&self, bucket: &str, key: &str) -> Result<bool, AwsError> {
        match self
            .send(Method::HEAD, self.url(bucket, key), &[], Bytes::new())
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.status == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// True if the bucket exists and is ours to use.
    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool, AwsError> {
        match self
            .send(Method::HEAD, self.url(bucket, ""), &[], Bytes::new())
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.status == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the bucket in the client's region; one we already own is not an error.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), AwsError> {
        let region = self.signed.region().unwrap_or("us-east-1");
        // us-east-1 takes no location constraint; every other region requires one.
        let body = if region == "us-east-1" {
            Bytes::new()
        } else {
            Bytes::from(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
            ))
        };
        match self
            .send(Method::PUT, self.url(bucket, ""), &[], body)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == "BucketAlreadyOwnedByYou" => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A key as it goes into the path: `/` kept, everything but unreserved characters escaped.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `<Error><Code>NoSuchKey</Code><Message>..</Message></Error>`; a body-less answer (HEAD) is
/// named by its status.
fn parse_error(status: u16, body: &[u8]) -> Parsed {
    let text = String::from_utf8_lossy(body);
    let code = xml_element(&text, "Code").unwrap_or_else(|| match status {
        404 => "NotFound".to_string(),
        403 => "Forbidden".to_string(),
        s => format!("HTTP{s}"),
    });
    Parsed {
        code,
        message: xml_element(&text, "Message").unwrap_or_default(),
        old_item: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_slashes_and_escape_the_rest() {
        assert_eq!(encode_key("codes/ab12"), "codes/ab12");
        assert_eq!(encode_key("a b+c/é"), "a%20b%2Bc/%C3%A9");
    }

    #[test]
    fn errors_are_read_from_xml_or_the_status() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>";
        let p = parse_error(404, body);
        assert_eq!(
            (p.code.as_str(), p.message.as_str()),
            ("NoSuchKey", "The specified key does not exist.")
        );
        assert_eq!(parse_error(404, b"").code, "NotFound");
        assert_eq!(parse_error(500, b"").code, "HTTP500");
    }
}
