//! `POST /wxa/getwxacodeunlimit`: an unlimited mini-program code. Idempotent (the same
//! parameters make the same code), so resent on transient failures.

use serde_json::Value;

use super::transport::Resend;
use super::{WeChatClient, WxError};
use crate::secret::Secret;

/// A code image: bytes that are a PNG or a JPEG by their magic numbers, with the content type
/// those bytes call for. Built only through [`Image::from_bytes`].
#[derive(Debug, Clone)]
pub struct Image {
    pub content_type: &'static str,
    pub bytes: bytes::Bytes,
}

impl Image {
    /// The bytes as an image if they are one, else the bytes back.
    pub fn from_bytes(bytes: bytes::Bytes) -> Result<Self, bytes::Bytes> {
        const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
        const JPEG: &[u8] = b"\xff\xd8\xff";
        let content_type = if bytes.starts_with(PNG) {
            "image/png"
        } else if bytes.starts_with(JPEG) {
            "image/jpeg"
        } else {
            return Err(bytes);
        };
        Ok(Image {
            content_type,
            bytes,
        })
    }
}

impl WeChatClient {
    /// `POST /wxa/getwxacodeunlimit`. A JSON errcode answer is an error whatever its content type,
    /// and so is any body that is not a PNG or JPEG by its own bytes (a JSON error sent as
    /// `image/*`, a BOM, an empty body): the content type WeChat sent is not trusted.
    pub async fn unlimited_qrcode(&self, token: &Secret, params: &Value) -> Result<Image, WxError> {
        let (content_type, bytes) = self
            .call(
                reqwest::Method::POST,
                "/wxa/getwxacodeunlimit",
                &[("access_token", token.expose())],
                Some(params),
                Resend::WhenTransient,
            )
            .await?;
        Image::from_bytes(bytes).map_err(|bytes| {
            WxError::BadResponse(format!(
                "getwxacodeunlimit returned {} bytes of {content_type:?}, not a PNG or JPEG image",
                bytes.len()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_known_by_its_bytes() {
        let png = bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\n....");
        assert_eq!(Image::from_bytes(png).unwrap().content_type, "image/png");
        let jpeg = bytes::Bytes::from_static(b"\xff\xd8\xff\xe0..JFIF");
        assert_eq!(Image::from_bytes(jpeg).unwrap().content_type, "image/jpeg");
        for bad in [
            &b""[..],
            b"{\"errmsg\":\"system error\"}",
            b"\xef\xbb\xbf{\"errcode\":40001}",
            b"<html>",
        ] {
            assert!(Image::from_bytes(bytes::Bytes::from_static(bad)).is_err());
        }
    }
}
