//! AWS Signature Version 4 for one request, signed in its headers: what the SDK's `aws-sigv4`
//! does for the calls this crate makes, in one pass over one buffer, with the day's signing key
//! derived once a day (four HMACs) instead of on every call.
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html>

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::SystemTime;

use aws_lc_rs::{digest, hmac};

/// How a service wants its request's path and payload signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Style {
    /// The path normalised and encoded again (AWS's default); the payload hash only signed.
    Default,
    /// S3: the path signed as sent; the payload hash also sent as `x-amz-content-sha256`.
    S3,
}

/// The credentials a request is signed with.
pub(super) struct Keys<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

/// Signs for one service in one region, keeping the day's signing key.
pub(super) struct Signer {
    service: &'static str,
    style: Style,
    /// (day `YYYYMMDD`, region, secret access key) → the key derived from them.
    day_key: Mutex<Option<(String, String, String, hmac::Key)>>,
}

/// The headers to add to the request (`x-amz-date`, `x-amz-security-token`,
/// `x-amz-content-sha256` for S3, `authorization`).
pub(super) type Added = Vec<(&'static str, String)>;

impl Signer {
    pub fn new(service: &'static str, style: Style) -> Self {
        Signer {
            service,
            style,
            day_key: Mutex::new(None),
        }
    }

    /// The headers that sign `method url` with `headers` (also signed) and `body`, at `now`.
    #[allow(clippy::too_many_arguments)] // the parts of one request, as the SDK's signer takes them
    pub fn sign(
        &self,
        keys: &Keys<'_>,
        region: &str,
        method: &str,
        url: &reqwest::Url,
        headers: &[(&'static str, &str)],
        body: &[u8],
        now: SystemTime,
    ) -> Added {
        let amz_date = amz_date(now);
        let day = &amz_date[..8];
        let payload = hex(digest::digest(&digest::SHA256, body).as_ref());

        // Every header signed, by lower-case name: the given ones, the host and ours.
        let host = crate::net::conn::authority(url);
        let mut signed: Vec<(String, &str)> = Vec::with_capacity(headers.len() + 4);
        signed.push(("host".into(), &host));
        signed.push(("x-amz-date".into(), &amz_date));
        if let Some(token) = keys.session_token {
            signed.push(("x-amz-security-token".into(), token));
        }
        if self.style == Style::S3 {
            signed.push(("x-amz-content-sha256".into(), &payload));
        }
        for (name, value) in headers {
            signed.push((name.to_ascii_lowercase(), value));
        }
        signed.sort_by(|a, b| a.0.cmp(&b.0));

        let mut canonical = String::with_capacity(512);
        canonical.push_str(method);
        canonical.push('\n');
        match self.style {
            Style::S3 => canonical.push_str(url.path()),
            Style::Default => encode_into(&mut canonical, &normalize(url.path()), false),
        }
        canonical.push('\n');
        canonical_query(&mut canonical, url);
        canonical.push('\n');
        for (name, value) in &signed {
            canonical.push_str(name);
            canonical.push(':');
            push_trimmed(&mut canonical, value);
            canonical.push('\n');
        }
        canonical.push('\n');
        let signed_names = signed
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(";");
        canonical.push_str(&signed_names);
        canonical.push('\n');
        canonical.push_str(&payload);

        let scope = format!("{day}/{region}/{}/aws4_request", self.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
        );
        let signature = {
            let mut cached = self.day_key.lock().expect("not poisoned");
            let fresh = cached
                .as_ref()
                .is_none_or(|(d, r, s, _)| d != day || r != region || s != keys.secret_access_key);
            if fresh {
                *cached = Some((
                    day.to_string(),
                    region.to_string(),
                    keys.secret_access_key.to_string(),
                    signing_key(keys.secret_access_key, day, region, self.service),
                ));
            }
            let (_, _, _, key) = cached.as_ref().expect("just set");
            hex(hmac::sign(key, to_sign.as_bytes()).as_ref())
        };

        let mut added: Added = Vec::with_capacity(4);
        added.push(("x-amz-date", amz_date.clone()));
        if let Some(token) = keys.session_token {
            added.push(("x-amz-security-token", token.to_string()));
        }
        if self.style == Style::S3 {
            added.push(("x-amz-content-sha256", payload.clone()));
        }
        added.push((
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
                keys.access_key_id
            ),
        ));
        added
    }
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, day), region), service), "aws4_request")`.
fn signing_key(secret: &str, day: &str, region: &str, service: &str) -> hmac::Key {
    let mut key = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, format!("AWS4{secret}").as_bytes()),
        day.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        key = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, key.as_ref()),
            part.as_bytes(),
        );
    }
    hmac::Key::new(hmac::HMAC_SHA256, key.as_ref())
}

/// `20261124T120000Z`.
fn amz_date(now: SystemTime) -> String {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (y, m, d) = crate::clock::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A header value as signed: trimmed, each run of spaces one space.
fn push_trimmed(out: &mut String, value: &str) {
    let mut space = false;
    for c in value.trim_matches(' ').chars() {
        if c == ' ' {
            if !space {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
}

/// AWS's URI encoding: every byte but `A-Z a-z 0-9 - . _ ~` as `%XX` (upper case); `/` kept
/// unless `slash` says to encode it too.
fn encode_into(out: &mut String, s: &str, slash: bool) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if !slash => out.push('/'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
}

/// The path without `.` and `..` segments, starting with `/` (`aws-sigv4`'s normalisation).
fn normalize(path: &str) -> String {
    if !path.contains("/.") && path.starts_with('/') {
        return path.to_string();
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    let joined = if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    };
    if path.ends_with('/') && !joined.ends_with('/') {
        format!("{joined}/")
    } else {
        joined
    }
}

/// The query's parameters, decoded, encoded AWS's way and sorted.
fn canonical_query(out: &mut String, url: &reqwest::Url) {
    if url.query().is_none_or(str::is_empty) {
        return;
    }
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let (mut ek, mut ev) = (String::new(), String::new());
            encode_into(&mut ek, &k, true);
            encode_into(&mut ev, &v, true);
            (ek, ev)
        })
        .collect();
    pairs.sort();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode, sign,
    };
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;

    use super::*;

    /// The headers the SDK's own signer (`aws-sigv4`) adds, by name.
    #[allow(clippy::too_many_arguments)]
    fn sdk(
        style: Style,
        service: &str,
        creds: &Credentials,
        region: &str,
        method: &str,
        url: &str,
        headers: &[(&'static str, &str)],
        body: &[u8],
        now: SystemTime,
    ) -> Vec<(String, String)> {
        let mut settings = SigningSettings::default();
        if style == Style::S3 {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        }
        let identity: Identity = creds.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(now)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut out: Vec<(String, String)> = instructions
            .headers()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn signatures_are_the_sdks() {
        let with_token = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("IQoJb3JpZ2luX2VjEJr//////////session+token=".into()),
            None,
            "t",
        );
        let without = Credentials::new("AKID2", "secret2", None, None, "t");
        type Case<'a> = (
            Style,
            &'a str,
            &'a str,
            &'a str,
            &'a [(&'static str, &'a str)],
            &'a [u8],
        );
        let cases: &[Case] = &[
            (
                Style::Default,
                "dynamodb",
                "POST",
                "https://dynamodb.cn-north-1.amazonaws.com.cn/",
                &[
                    ("content-type", "application/x-amz-json-1.0"),
                    ("x-amz-target", "DynamoDB_20120810.GetItem"),
                ],
                br#"{"TableName":"t","Key":{"pk":{"S":"a"}}}"#,
            ),
            (
                Style::Default,
                "events",
                "POST",
                "http://127.0.0.1:5000/",
                &[
                    ("content-type", "application/x-amz-json-1.1"),
                    ("x-amz-target", "AWSEvents.PutEvents"),
                ],
                b"{}",
            ),
            (
                Style::Default,
                "secretsmanager",
                "POST",
                "http://localhost:4566",
                &[
                    ("content-type", "application/x-amz-json-1.1"),
                    ("x-amz-target", "secretsmanager.GetSecretValue"),
                ],
                b"",
            ),
            (
                Style::Default,
                "execute-api",
                "GET",
                "https://x.example.com/p/a%20b/c~d?b=2&a=1&a=0",
                &[],
                b"",
            ),
            (
                Style::S3,
                "s3",
                "PUT",
                "https://bucket.s3.us-east-1.amazonaws.com/codes/a%20b/%E4%BD%A0-x_y~z.png",
                &[
                    ("content-type", "image/png"),
                    ("cache-control", "max-age=31536000,  immutable"),
                ],
                b"\x89PNG...",
            ),
            (
                Style::S3,
                "s3",
                "GET",
                "http://127.0.0.1:5000/bucket/codes/k!$&'()*+,;=:@.png",
                &[],
                b"",
            ),
            (
                Style::S3,
                "s3",
                "HEAD",
                "http://127.0.0.1:5000/bucket/",
                &[],
                b"",
            ),
            (
                Style::S3,
                "s3",
                "GET",
                "http://127.0.0.1:5000/bucket?list-type=2&prefix=a%20b/&delimiter=%2F",
                &[],
                b"",
            ),
        ];
        let mut now = UNIX_EPOCH + Duration::from_secs(1_795_003_200);
        for (style, service, method, url, headers, body) in cases {
            for creds in [&with_token, &without] {
                for region in ["cn-north-1", "us-east-1"] {
                    // Two calls a day apart on one signer: its kept key follows the day.
                    let signer = Signer::new(service, *style);
                    for _ in 0..2 {
                        now += Duration::from_secs(86_400 - 7);
                        let keys = Keys {
                            access_key_id: creds.access_key_id(),
                            secret_access_key: creds.secret_access_key(),
                            session_token: creds.session_token(),
                        };
                        let parsed = reqwest::Url::parse(url).unwrap();
                        let mut ours: Vec<(String, String)> = signer
                            .sign(&keys, region, method, &parsed, headers, body, now)
                            .into_iter()
                            .map(|(n, v)| (n.to_string(), v))
                            .collect();
                        ours.sort();
                        // The SDK signs the URL as sent (reqwest's parse of it).
                        let theirs = sdk(
                            *style,
                            service,
                            creds,
                            region,
                            method,
                            parsed.as_str(),
                            headers,
                            body,
                            now,
                        );
                        assert_eq!(ours, theirs, "{method} {url} in {region}");
                    }
                }
            }
        }
    }

    #[test]
    fn paths_are_normalised_as_the_sdk_does() {
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("/a/./b/../c/"), "/a/c/");
        assert_eq!(normalize("a"), "/a");
    }
}
