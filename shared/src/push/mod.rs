//! The message push receiver (消息推送): WeChat's verification call and its pushes, in every
//! mode the console offers (plaintext, compatible, safe) and both data formats (XML, JSON).
//!
//! - [`crypto`]: the signatures and safe mode's AES.
//! - [`message`]: XML and JSON as one normalised JSON shape, the bus's `detail-type`, the key
//!   that recognises WeChat's retries.
//!
//! [`PushKeys::open`] checks everything before anything is parsed or decrypted: the timestamp
//! (5 minutes, against replays), the signature, then the key and the app id. Its errors name the
//! check that failed, never the message's content.

pub mod crypto;
pub mod message;

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::secret::Secret;
use crypto::{AesKey, signature, signature_matches};

pub use message::Format;

/// Push timestamps further than this from our clock are refused (replays).
pub const MAX_SKEW_SECS: u64 = 300;

/// Push bodies larger than this are refused (413); WeChat's pushes are a few kilobytes.
pub const MAX_PUSH_BYTES: usize = 64 * 1024;

/// The console's Token and EncodingAESKey.
#[derive(Clone)]
pub struct PushKeys {
    token: Secret,
    aes: Option<AesKey>,
}

impl std::fmt::Debug for PushKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushKeys")
            .field("token", &self.token)
            .field("aes", &self.aes.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A push checked and read: its fields, and what it came as.
#[derive(Debug, Clone)]
pub struct Opened {
    pub fields: Map<String, Value>,
    pub format: Format,
    /// Whether it came encrypted (safe or compatible mode with the key).
    pub encrypted: bool,
}

fn forbidden(why: &str) -> ApiError {
    ApiError::Forbidden(format!("the push was refused: {why}"))
}

fn bad(why: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest(why.into())
}

impl PushKeys {
    /// `aes_key` is the 43-character EncodingAESKey (absent: plaintext mode only).
    pub fn new(token: &str, aes_key: Option<&str>) -> Result<Self, crypto::CryptoError> {
        Ok(PushKeys {
            token: Secret::new(token),
            aes: aes_key.map(AesKey::parse).transpose()?,
        })
    }

    /// The checked query's timestamp, nonce and `signature` (plain) or `msg_signature`.
    fn fresh<'q>(
        &self,
        q: &'q HashMap<String, String>,
        now: u64,
    ) -> Result<(&'q str, &'q str), ApiError> {
        let timestamp = q
            .get("timestamp")
            .map(String::as_str)
            .ok_or_else(|| forbidden("no timestamp"))?;
        let nonce = q.get("nonce").map(String::as_str).unwrap_or("");
        let ts: u64 = timestamp
            .parse()
            .map_err(|_| forbidden("the timestamp is not a number"))?;
        if ts.abs_diff(now) > MAX_SKEW_SECS {
            return Err(forbidden(
                "the timestamp is more than 5 minutes away (a replay?)",
            ));
        }
        Ok((timestamp, nonce))
    }

    fn check_signature(
        &self,
        q: &HashMap<String, String>,
        timestamp: &str,
        nonce: &str,
    ) -> Result<(), ApiError> {
        let given = q
            .get("signature")
            .ok_or_else(|| forbidden("no signature"))?;
        let expected = signature(&[self.token.expose(), timestamp, nonce]);
        if !signature_matches(given, &expected) {
            return Err(forbidden("the signature does not match the push token"));
        }
        Ok(())
    }

    /// The verification call (`GET`): the `echostr` to answer when the signature holds.
    pub fn verify<'q>(
        &self,
        q: &'q HashMap<String, String>,
        now: u64,
    ) -> Result<&'q str, ApiError> {
        let (timestamp, nonce) = self.fresh(q, now)?;
        self.check_signature(q, timestamp, nonce)?;
        q.get("echostr")
            .map(String::as_str)
            .ok_or_else(|| bad("echostr is required"))
    }

    /// A push (`POST`): checked, decrypted where it is encrypted, parsed and normalised.
    ///
    /// - With an `Encrypt` field and our key: `msg_signature` over it must hold, it must
    ///   decrypt, and the app id inside must be `appid`; the decrypted message is the push.
    /// - With our key but no `msg_signature`: refused (a plaintext signature covers no part of
    ///   the body, so with a key only encrypted pushes are taken).
    /// - Without a key (plaintext mode, or compatible mode read as plaintext): `signature` must
    ///   hold, and the plaintext fields are the push (`Encrypt` dropped).
    pub fn open(
        &self,
        q: &HashMap<String, String>,
        body: &[u8],
        appid: &str,
        now: u64,
    ) -> Result<Opened, ApiError> {
        let (timestamp, nonce) = self.fresh(q, now)?;
        let body = std::str::from_utf8(body).map_err(|_| bad("the push body is not UTF-8"))?;
        let encrypt = |fields: &Map<String, Value>| {
            fields
                .get("Encrypt")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let (Some(given), Some(key)) = (q.get("msg_signature"), &self.aes) {
            // Safe or compatible mode: the envelope, then msg_signature over its Encrypt, then
            // the decryption.
            let (format, fields) = message::parse(body).map_err(bad)?;
            let enc =
                encrypt(&fields).ok_or_else(|| bad("msg_signature without an Encrypt field"))?;
            let expected = signature(&[self.token.expose(), timestamp, nonce, &enc]);
            if !signature_matches(given, &expected) {
                return Err(forbidden("msg_signature does not match the push token"));
            }
            let plain = key.decrypt(&enc, appid).map_err(|e| match e {
                crypto::CryptoError::ForeignAppid => forbidden("the message is for another app id"),
                _ => forbidden(&format!("it does not decrypt with our key: {e}")),
            })?;
            let (_, inner) = message::parse(&plain).map_err(bad)?;
            return Ok(Opened {
                fields: inner,
                format,
                encrypted: true,
            });
        }
        // With an EncodingAESKey configured only encrypted pushes are taken: a plaintext
        // signature covers no part of the body.
        if self.aes.is_some() {
            return Err(forbidden(
                "WECHAT_PUSH_AES_KEY is set: only compatible or safe mode pushes (with msg_signature) are taken",
            ));
        }
        // Plaintext mode: the signature before the body.
        self.check_signature(q, timestamp, nonce)?;
        let (format, mut fields) = message::parse(body).map_err(bad)?;
        if encrypt(&fields).is_some() && message::detail_type(&fields).is_none() {
            return Err(forbidden(
                "an encrypted push, and no WECHAT_PUSH_AES_KEY is configured",
            ));
        }
        fields.remove("Encrypt");
        Ok(Opened {
            fields,
            format,
            encrypted: false,
        })
    }

    /// Builds the query and body WeChat would send for `message` (JSON fields), for this
    /// module's tests (the sandbox builds pushes with its own, independent code).
    #[cfg(test)]
    fn seal(
        &self,
        message: &str,
        appid: &str,
        timestamp: u64,
        nonce: &str,
        encrypt: bool,
        format: Format,
    ) -> (Vec<(String, String)>, String) {
        let ts = timestamp.to_string();
        let mut query = vec![
            (
                "signature".to_string(),
                signature(&[self.token.expose(), &ts, nonce]),
            ),
            ("timestamp".to_string(), ts.clone()),
            ("nonce".to_string(), nonce.to_string()),
        ];
        let Some(key) = self.aes.as_ref().filter(|_| encrypt) else {
            return (query, message.to_string());
        };
        let enc = key.encrypt(message, appid);
        query.push(("encrypt_type".into(), "aes".into()));
        query.push((
            "msg_signature".into(),
            signature(&[self.token.expose(), &ts, nonce, &enc]),
        ));
        let body = match format {
            Format::Json => {
                serde_json::json!({ "ToUserName": "gh_sandbox", "Encrypt": enc }).to_string()
            }
            Format::Xml => format!(
                "<xml><ToUserName><![CDATA[gh_sandbox]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
            ),
        };
        (query, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn q(pairs: Vec<(String, String)>) -> HashMap<String, String> {
        pairs.into_iter().collect()
    }

    #[test]
    fn opens_what_it_seals_and_refuses_the_rest() {
        let keys = PushKeys::new("tok", Some(KEY)).unwrap();
        let msg = r#"{"MsgType":"event","Event":"x","CreateTime":5}"#;
        let plain_keys = PushKeys::new("tok", None).unwrap();
        for encrypt in [false, true] {
            for format in [Format::Json, Format::Xml] {
                // A receiver with a key takes encrypted pushes; plaintext mode has none.
                let keys = if encrypt { &keys } else { &plain_keys };
                let (query, body) = keys.seal(msg, "wx1", 1000, "n", encrypt, format);
                let o = keys
                    .open(&q(query.clone()), body.as_bytes(), "wx1", 1000)
                    .unwrap();
                assert_eq!(o.fields["Event"], "x");
                assert_eq!(o.encrypted, encrypt);
                // Stale, or far ahead.
                assert_eq!(
                    keys.open(&q(query.clone()), body.as_bytes(), "wx1", 1301)
                        .unwrap_err()
                        .code(),
                    "forbidden"
                );
                assert_eq!(
                    keys.open(&q(query.clone()), body.as_bytes(), "wx1", 699)
                        .unwrap_err()
                        .code(),
                    "forbidden"
                );
                let other = PushKeys::new("other", if encrypt { Some(KEY) } else { None }).unwrap();
                assert_eq!(
                    other
                        .open(&q(query.clone()), body.as_bytes(), "wx1", 1000)
                        .unwrap_err()
                        .code(),
                    "forbidden"
                );
                if encrypt {
                    assert_eq!(
                        keys.open(&q(query), body.as_bytes(), "wx2", 1000)
                            .unwrap_err()
                            .code(),
                        "forbidden"
                    );
                }
            }
        }
        // A plaintext push to a receiver with a key.
        let (query, body) = plain_keys.seal(msg, "wx1", 1000, "n", false, Format::Json);
        assert_eq!(
            keys.open(&q(query), body.as_bytes(), "wx1", 1000)
                .unwrap_err()
                .code(),
            "forbidden"
        );
        // An encrypted push to a receiver without the key.
        let plain_only = PushKeys::new("tok", None).unwrap();
        let (query, body) = keys.seal(msg, "wx1", 1000, "n", true, Format::Json);
        assert_eq!(
            plain_only
                .open(&q(query), body.as_bytes(), "wx1", 1000)
                .unwrap_err()
                .code(),
            "forbidden"
        );
    }

    #[test]
    fn verification_echoes_only_when_signed() {
        let keys = PushKeys::new("tok", None).unwrap();
        let (mut query, _) = keys.seal("{}", "wx1", 1000, "n", false, Format::Json);
        query.push(("echostr".into(), "hello".into()));
        assert_eq!(keys.verify(&q(query.clone()), 1000).unwrap(), "hello");
        query[0].1 = "0".repeat(40);
        assert_eq!(
            keys.verify(&q(query), 1000).unwrap_err().code(),
            "forbidden"
        );
    }
}
