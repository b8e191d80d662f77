//! The message push's signatures and its safe-mode encryption, as WeChat's documentation states
//! them:
//!
//! - `signature = sha1(sort(token, timestamp, nonce))` (verification and plaintext pushes);
//!   `msg_signature = sha1(sort(token, timestamp, nonce, Encrypt))` (safe and compatible mode).
//! - key = base64(EncodingAESKey + "="), 32 bytes (AES-256); IV = the key's first 16 bytes;
//!   AES-CBC; PKCS#7 padding to 32-byte blocks; plaintext = 16 random bytes | 4-byte big-endian
//!   length | message | appid.
//!
//! The signature is always checked before anything is decrypted.

use aws_lc_rs::cipher::{
    AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use base64::Engine;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};

/// WeChat's EncodingAESKey is 43 random letters and digits: decoded as base64 its last
/// character carries two bits beyond the 32 bytes, which strict decoders refuse.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// What can be wrong with a safe-mode message (never its content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the EncodingAESKey is not 43 base64 characters")]
    BadKey,
    #[error("Encrypt is not base64 of whole AES blocks")]
    BadCiphertext,
    #[error("the decrypted message's padding is wrong (wrong key or tampered ciphertext)")]
    BadPadding,
    #[error("the decrypted message's length field is wrong (wrong key or tampered ciphertext)")]
    BadLength,
    #[error("the decrypted message is for another app id")]
    ForeignAppid,
}

/// The 32-byte AES key of an EncodingAESKey.
#[derive(Clone)]
pub struct AesKey([u8; 32]);

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

impl AesKey {
    /// Parses the console's 43-character EncodingAESKey.
    pub fn parse(encoding_aes_key: &str) -> Result<Self, CryptoError> {
        if encoding_aes_key.len() != 43 || !encoding_aes_key.is_ascii() {
            return Err(CryptoError::BadKey);
        }
        let bytes = LENIENT
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(AesKey(key))
    }

    fn iv(&self) -> [u8; 16] {
        self.0[..16].try_into().expect("16 of 32 bytes")
    }

    /// Decrypts a base64 `Encrypt` field and returns the message, checking the padding, the
    /// length field and that the trailing app id is `appid`.
    pub fn decrypt(&self, encrypt_b64: &str, appid: &str) -> Result<String, CryptoError> {
        let mut buf = base64::engine::general_purpose::STANDARD
            .decode(encrypt_b64.trim())
            .map_err(|_| CryptoError::BadCiphertext)?;
        if buf.is_empty() || buf.len() % 16 != 0 {
            return Err(CryptoError::BadCiphertext);
        }
        let key = UnboundCipherKey::new(&AES_256, &self.0).map_err(|_| CryptoError::BadKey)?;
        let key = DecryptingKey::cbc(key).map_err(|_| CryptoError::BadKey)?;
        let plain = key
            .decrypt(
                &mut buf,
                DecryptionContext::Iv128(FixedLength::from(self.iv())),
            )
            .map_err(|_| CryptoError::BadCiphertext)?;
        // PKCS#7 to 32-byte blocks: 1..=32 bytes, each the pad length.
        let pad = *plain.last().ok_or(CryptoError::BadPadding)? as usize;
        if pad == 0 || pad > 32 || pad > plain.len() {
            return Err(CryptoError::BadPadding);
        }
        let (body, padding) = plain.split_at(plain.len() - pad);
        if padding.iter().any(|&b| b as usize != pad) {
            return Err(CryptoError::BadPadding);
        }
        if body.len() < 20 {
            return Err(CryptoError::BadLength);
        }
        let len = u32::from_be_bytes(body[16..20].try_into().expect("4 bytes")) as usize;
        let rest = &body[20..];
        if len > rest.len() {
            return Err(CryptoError::BadLength);
        }
        let (message, trailing_appid) = rest.split_at(len);
        if trailing_appid != appid.as_bytes() {
            return Err(CryptoError::ForeignAppid);
        }
        String::from_utf8(message.to_vec()).map_err(|_| CryptoError::BadLength)
    }

    /// Encrypts `message` for `appid` as WeChat does (for replies and the tests).
    pub fn encrypt(&self, message: &str, appid: &str) -> String {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).expect("the OS has randomness");
        let mut buf = Vec::with_capacity(message.len() + appid.len() + 52);
        buf.extend_from_slice(&random);
        buf.extend_from_slice(&(message.len() as u32).to_be_bytes());
        buf.extend_from_slice(message.as_bytes());
        buf.extend_from_slice(appid.as_bytes());
        let pad = 32 - buf.len() % 32;
        buf.extend(std::iter::repeat_n(pad as u8, pad));
        let key = UnboundCipherKey::new(&AES_256, &self.0).expect("32-byte key");
        let key = EncryptingKey::cbc(key).expect("AES-256-CBC");
        key.less_safe_encrypt(
            &mut buf,
            EncryptionContext::Iv128(FixedLength::from(self.iv())),
        )
        .expect("whole blocks");
        base64::engine::general_purpose::STANDARD.encode(buf)
    }
}

/// `sha1` of the parts sorted and joined, as lowercase hex: WeChat's `signature` (token,
/// timestamp, nonce) and `msg_signature` (the same and `Encrypt`).
pub fn signature(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        sorted.concat().as_bytes(),
    );
    crate::ids::hex(d.as_ref())
}

/// Compares a signature from the query with the expected one in time independent of where
/// they differ (case-insensitive: both are hex).
pub fn signature_matches(given: &str, expected: &str) -> bool {
    let given = given.to_ascii_lowercase();
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // The EncodingAESKey of WeChat's own sample code; its last character has trailing bits.
    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    #[test]
    fn signatures_are_sha1_of_the_sorted_parts() {
        // sha1("1409304348" + "xxxxxx" + "token") ... sorted: "1409304348", "token", "xxxxxx"
        let s = signature(&["token", "1409304348", "xxxxxx"]);
        let d = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            b"1409304348tokenxxxxxx",
        );
        assert_eq!(s, crate::ids::hex(d.as_ref()));
        assert_eq!(s.len(), 40);
        assert!(signature_matches(&s.to_uppercase(), &s));
        assert!(!signature_matches(&s[1..], &s));
    }

    #[test]
    fn a_lenient_key_round_trips_and_checks_everything() {
        let key = AesKey::parse(KEY).unwrap();
        let msg = "<xml><Content><![CDATA[hi]]></Content></xml>";
        for m in [msg, "", &"x".repeat(1000)] {
            let enc = key.encrypt(m, "wx1");
            assert_eq!(key.decrypt(&enc, "wx1").unwrap(), m);
            assert_eq!(key.decrypt(&enc, "wx2"), Err(CryptoError::ForeignAppid));
        }
        let enc = key.encrypt(msg, "wx1");
        // G and H differ only in the two bits beyond the key: the same key.
        let same = AesKey::parse(&format!("{}H", &KEY[..42])).unwrap();
        assert_eq!(same.decrypt(&enc, "wx1").unwrap(), msg);
        let other = AesKey::parse(&format!("b{}", &KEY[1..])).unwrap();
        assert!(other.decrypt(&enc, "wx1").is_err());
        // A flipped bit in the last block breaks the padding or the app id.
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(&enc)
            .unwrap();
        let n = raw.len();
        raw[n - 20] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(raw);
        assert!(key.decrypt(&tampered, "wx1").is_err());
        assert_eq!(key.decrypt("AAAA", "wx1"), Err(CryptoError::BadCiphertext));
        assert_eq!(key.decrypt("%%", "wx1"), Err(CryptoError::BadCiphertext));
        assert!(AesKey::parse("short").is_err());
        assert!(AesKey::parse(&"!".repeat(43)).is_err());
    }
}
