//! Randomness from the OS CSPRNG: session tokens, request ids, lease holders, jitter.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the OS random number generator failed");
    buf
}

/// 256 bits from the OS CSPRNG, base64url without padding (43 characters).
pub fn new_session_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// A short random id for requests served outside Lambda and for lease holders.
pub fn new_request_id() -> String {
    random_bytes::<12>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes::<8>())
}

/// Hex SHA-256, the form under which anything secret is used as a key.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_base64url_and_unique() {
        let a = new_session_token();
        let b = new_session_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
    }

    #[test]
    fn sha256_hex_is_known() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
