//! Message pushes as WeChat builds them (消息推送), for the backend's receiver: the data format
//! (XML or JSON), the mode (plaintext, compatible, safe), the query's `signature` and, when
//! encrypted, `msg_signature` and `encrypt_type=aes`.
//!
//! Written from WeChat's documentation, independently of the receiver's code: signature =
//! sha1 of the sorted (token, timestamp, nonce[, Encrypt]) joined; key =
//! base64(EncodingAESKey + "="); AES-256-CBC, IV = the key's first 16 bytes; plaintext = 16
//! random bytes, a 4-byte big-endian length, the message and the appid, PKCS#7-padded to
//! 32-byte blocks.

use aws_lc_rs::cipher::{AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use base64::Engine;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The console's three modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PushMode {
    /// 明文模式: the message as it is, `signature` only.
    #[default]
    Plain,
    /// 兼容模式: the plaintext fields and `Encrypt`, both signatures.
    Compatible,
    /// 安全模式: `ToUserName` and `Encrypt` only, both signatures.
    Safe,
}

/// The console's two data formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PushFormat {
    #[default]
    Xml,
    Json,
}

/// One push to build: `message` is the push's fields as JSON (`List` an array of items).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PushSpec {
    #[serde(default)]
    pub mode: PushMode,
    #[serde(default)]
    pub format: PushFormat,
    pub message: Map<String, Value>,
    /// Defaults to the sandbox clock's time.
    #[serde(default)]
    pub timestamp: Option<u64>,
    #[serde(default)]
    pub nonce: Option<String>,
}

/// A push as it goes on the wire: POST `<url>?<query>` with this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushRequest {
    pub query: Vec<(String, String)>,
    pub content_type: &'static str,
    pub body: String,
}

impl PushRequest {
    /// The query string, form-encoded.
    pub fn query_string(&self) -> String {
        self.query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// sha1 of the sorted parts, joined, as lowercase hex.
pub fn sign(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        sorted.concat().as_bytes(),
    );
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// WeChat's EncodingAESKey is 43 letters and digits: its last character has bits to spare.
const KEY_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// `Encrypt` for `message` under the EncodingAESKey, for `appid`.
pub fn encrypt(encoding_aes_key: &str, message: &str, appid: &str) -> String {
    let key = KEY_B64
        .decode(format!("{encoding_aes_key}="))
        .expect("the sandbox's EncodingAESKey is base64");
    let mut plain = Vec::new();
    let mut random = [0u8; 16];
    aws_lc_rs::rand::fill(&mut random).expect("randomness");
    plain.extend_from_slice(&random);
    plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
    plain.extend_from_slice(message.as_bytes());
    plain.extend_from_slice(appid.as_bytes());
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    let iv: [u8; 16] = key[..16].try_into().expect("32-byte key");
    let cipher = EncryptingKey::cbc(UnboundCipherKey::new(&AES_256, &key).expect("AES-256 key"))
        .expect("CBC");
    cipher
        .less_safe_encrypt(&mut plain, EncryptionContext::Iv128(FixedLength::from(iv)))
        .expect("whole blocks");
    base64::engine::general_purpose::STANDARD.encode(plain)
}

/// The element WeChat's XML wraps a subscribe event's `List` items in.
fn list_wrapper(event: Option<&str>) -> Option<&'static str> {
    match event? {
        "subscribe_msg_popup_event" => Some("SubscribeMsgPopupEvent"),
        "subscribe_msg_change_event" => Some("SubscribeMsgChangeEvent"),
        "subscribe_msg_sent_event" => Some("SubscribeMsgSentEvent"),
        _ => None,
    }
}

fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

fn xml_value(name: &str, v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| xml_value(name, i, out)),
        Value::Object(m) => {
            out.push_str(&format!("<{name}>"));
            for (k, v) in m {
                xml_value(k, v, out);
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::String(s) => out.push_str(&format!("<{name}>{}</{name}>", cdata(s))),
        Value::Null => out.push_str(&format!("<{name}></{name}>")),
        other => out.push_str(&format!("<{name}>{other}</{name}>")),
    }
}

/// The message as WeChat's XML: strings in CDATA, numbers bare, a subscribe event's `List`
/// items inside their wrapper element.
pub fn to_xml(message: &Map<String, Value>) -> String {
    let wrapper = list_wrapper(message.get("Event").and_then(Value::as_str));
    let mut out = String::from("<xml>");
    for (k, v) in message {
        match (k.as_str(), wrapper) {
            ("List", Some(w)) => {
                out.push_str(&format!("<{w}>"));
                xml_value("List", v, &mut out);
                out.push_str(&format!("</{w}>"));
            }
            _ => xml_value(k, v, &mut out),
        }
    }
    out.push_str("</xml>");
    out
}

/// Builds the push for `spec` with the console's `token` and `aes_key`.
pub fn build(
    spec: &PushSpec,
    token: &str,
    aes_key: &str,
    appid: &str,
    original_id: &str,
    now: u64,
) -> PushRequest {
    let timestamp = spec.timestamp.unwrap_or(now).to_string();
    // WeChat's nonce is random: two pushes in one second have different signatures.
    let nonce = spec.nonce.clone().unwrap_or_else(|| {
        let mut b = [0u8; 4];
        aws_lc_rs::rand::fill(&mut b).expect("randomness");
        (u32::from_be_bytes(b) % 1_000_000_000).to_string()
    });
    let plain = match spec.format {
        PushFormat::Xml => to_xml(&spec.message),
        PushFormat::Json => Value::Object(spec.message.clone()).to_string(),
    };
    let mut query = vec![
        ("signature".to_string(), sign(&[token, &timestamp, &nonce])),
        ("timestamp".to_string(), timestamp.clone()),
        ("nonce".to_string(), nonce.clone()),
    ];
    if let Some(openid) = spec.message.get("FromUserName").and_then(Value::as_str) {
        query.push(("openid".to_string(), openid.to_string()));
    }
    let content_type = match spec.format {
        PushFormat::Xml => "text/xml",
        PushFormat::Json => "application/json",
    };
    if spec.mode == PushMode::Plain {
        return PushRequest {
            query,
            content_type,
            body: plain,
        };
    }
    let enc = encrypt(aes_key, &plain, appid);
    query.push(("encrypt_type".to_string(), "aes".to_string()));
    query.push((
        "msg_signature".to_string(),
        sign(&[token, &timestamp, &nonce, &enc]),
    ));
    let mut envelope = match spec.mode {
        PushMode::Compatible => spec.message.clone(),
        _ => {
            let mut m = Map::new();
            m.insert("ToUserName".into(), Value::String(original_id.to_string()));
            m
        }
    };
    envelope.insert("Encrypt".into(), Value::String(enc));
    let body = match spec.format {
        PushFormat::Xml => to_xml(&envelope),
        PushFormat::Json => Value::Object(envelope).to_string(),
    };
    PushRequest {
        query,
        content_type,
        body,
    }
}

/// POSTs `req` to `url` (plain `http://host:port/path`, as the local receiver listens): the
/// status and body of the answer. A small HTTP/1.1 client: one request, `Connection: close`.
pub async fn deliver(url: &str, req: &PushRequest) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// push URLs can be delivered to")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let target = format!("{path}{sep}{}", req.query_string());
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: Mozilla/4.0\r\n\
         Content-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        req.content_type,
        req.body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(req.body.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut raw),
    )
    .await
    .map_err(|_| "no answer within 5 s (WeChat would retry)".to_string())?
    .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("the answer has no status line")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_wraps_subscribe_items_and_puts_strings_in_cdata() {
        let m = json!({"MsgType": "event", "Event": "subscribe_msg_popup_event", "CreateTime": 5,
                       "List": [{"TemplateId": "t]]>x", "PopupScene": 2}]});
        assert_eq!(
            to_xml(m.as_object().unwrap()),
            "<xml><CreateTime>5</CreateTime><Event><![CDATA[subscribe_msg_popup_event]]></Event>\
             <List><PopupScene>2</PopupScene><TemplateId><![CDATA[t]]]]><![CDATA[>x]]></TemplateId></List>\
             <MsgType><![CDATA[event]]></MsgType></xml>"
                .replace("<List>", "<SubscribeMsgPopupEvent><List>")
                .replace("</List>", "</List></SubscribeMsgPopupEvent>")
        );
    }

    #[test]
    fn safe_mode_hides_everything_but_the_recipient() {
        let spec = PushSpec {
            mode: PushMode::Safe,
            format: PushFormat::Json,
            message: json!({"MsgType": "text", "Content": "hi"})
                .as_object()
                .unwrap()
                .clone(),
            timestamp: Some(100),
            nonce: Some("n".into()),
        };
        let key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        let req = build(&spec, "tok", key, "wx1", "gh_1", 0);
        let body: Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(body.as_object().unwrap().len(), 2);
        let enc = body["Encrypt"].as_str().unwrap();
        let q: std::collections::HashMap<_, _> = req.query.iter().cloned().collect();
        assert_eq!(q["msg_signature"], sign(&["tok", "100", "n", enc]));
        assert_eq!(q["signature"], sign(&["tok", "100", "n"]));
        assert_eq!(q["encrypt_type"], "aes");
    }
}
