//! One-time codes: login codes (`wx.login` → jscode2session) and phone codes
//! (getPhoneNumber button → getuserphonenumber), plus the identities a login yields.
//!
//! A code is either minted by the test harness (it then maps to a chosen user or phone and
//! expires after `code_ttl_secs`), or made up by the caller: a well-formed code nobody minted is
//! accepted once, so a developer can log in with any string.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::PhoneSpec;
use crate::error::{self, WxError};

/// Why a code could not be redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Unknown,
    Expired,
    Used,
}

#[derive(Debug)]
struct Entry<T> {
    value: T,
    expires_at: Duration,
    used: bool,
}

/// Single-use codes mapping to a `T`.
#[derive(Debug)]
struct CodeBook<T> {
    entries: HashMap<String, Entry<T>>,
}

impl<T: Clone> CodeBook<T> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }

    fn insert(&mut self, code: String, value: T, expires_at: Duration, used: bool) {
        self.entries.insert(
            code,
            Entry {
                value,
                expires_at,
                used,
            },
        );
    }

    fn redeem(&mut self, code: &str, now: Duration) -> Result<T, Refusal> {
        let entry = self.entries.get_mut(code).ok_or(Refusal::Unknown)?;
        if entry.used {
            Err(Refusal::Used)
        } else if now >= entry.expires_at {
            Err(Refusal::Expired)
        } else {
            entry.used = true;
            Ok(entry.value.clone())
        }
    }
}

/// Login codes, and the per-user session keys logins hand out.
#[derive(Debug)]
pub(crate) struct LoginCodes {
    ttl: Duration,
    book: CodeBook<String>,
    session_keys: HashMap<String, String>,
}

impl LoginCodes {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            book: CodeBook::new(),
            session_keys: HashMap::new(),
        }
    }

    /// A fresh code for `user`, shaped like a real `wx.login` code (32 alphanumerics).
    pub(crate) fn mint(&mut self, user: &str, now: Duration) -> String {
        let code = random_alphanumeric(32);
        self.book
            .insert(code.clone(), user.to_owned(), now + self.ttl, false);
        code
    }

    /// Exchanges a code for its user, as jscode2session does.
    pub(crate) fn redeem(&mut self, code: &str, now: Duration) -> Result<String, WxError> {
        match self.book.redeem(code, now) {
            Ok(user) => Ok(user),
            Err(Refusal::Used) => Err(error::CODE_USED),
            Err(Refusal::Expired) => Err(error::INVALID_CODE),
            Err(Refusal::Unknown) => {
                let user = adhoc_login_user(code)?;
                // Remember it as used; expiry is irrelevant for a used code.
                self.book.insert(code.to_owned(), user.clone(), now, true);
                Ok(user)
            }
        }
    }

    /// The user's session key: random, made on the first login, the same on every later one.
    pub(crate) fn session_key(&mut self, user: &str) -> String {
        self.session_keys
            .entry(user.to_owned())
            .or_insert_with(|| {
                let mut key = [0u8; 16];
                getrandom::fill(&mut key).expect("the OS random number generator failed");
                STANDARD.encode(key)
            })
            .clone()
    }
}

/// The user behind a code nobody minted: the part before the first '.'.
fn adhoc_login_user(code: &str) -> Result<String, WxError> {
    let well_formed = (1..=128).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@:-".contains(&b));
    if !well_formed || code.starts_with("invalid") {
        return Err(error::INVALID_CODE);
    }
    if code.starts_with("risky") {
        return Err(error::CODE_BLOCKED);
    }
    Ok(code.split('.').next().unwrap_or(code).to_owned())
}

/// Phone codes.
#[derive(Debug)]
pub(crate) struct PhoneCodes {
    ttl: Duration,
    book: CodeBook<PhoneSpec>,
}

impl PhoneCodes {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            book: CodeBook::new(),
        }
    }

    /// A fresh code for `phone`, shaped like a real one (64 hex digits).
    pub(crate) fn mint(&mut self, phone: PhoneSpec, now: Duration) -> String {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random number generator failed");
        let code = hex(&bytes);
        self.book.insert(code.clone(), phone, now + self.ttl, false);
        code
    }

    /// Exchanges a code for its phone, as getuserphonenumber does. Every refusal is 40029.
    pub(crate) fn redeem(&mut self, code: &str, now: Duration) -> Result<PhoneSpec, WxError> {
        match self.book.redeem(code, now) {
            Ok(phone) => Ok(phone),
            Err(Refusal::Used | Refusal::Expired) => Err(error::INVALID_CODE),
            Err(Refusal::Unknown) => {
                let phone = adhoc_phone(code)?;
                self.book.insert(code.to_owned(), phone.clone(), now, true);
                Ok(phone)
            }
        }
    }
}

/// The phone behind a code nobody minted: a mainland mobile number derived from the code.
fn adhoc_phone(code: &str) -> Result<PhoneSpec, WxError> {
    let well_formed = (1..=128).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !well_formed || code.starts_with("invalid") {
        return Err(error::INVALID_CODE);
    }
    let digest = Sha256::digest(format!("phone:{code}"));
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % 100_000_000;
    let number = format!("138{n:08}");
    Ok(PhoneSpec {
        phone_number: number.clone(),
        pure_phone_number: number,
        country_code: "86".to_owned(),
    })
}

/// openid: "o" + 27 characters of base64url(sha256(appid + ":" + user)), 28 like WeChat's.
pub(crate) fn openid(appid: &str, user: &str) -> String {
    digest_id('o', &format!("{appid}:{user}"))
}

/// unionid: the same over "union:" + user, so it does not depend on the app.
pub(crate) fn unionid(user: &str) -> String {
    digest_id('u', &format!("union:{user}"))
}

fn digest_id(prefix: char, input: &str) -> String {
    let encoded = URL_SAFE_NO_PAD.encode(Sha256::digest(input));
    format!("{prefix}{}", &encoded[..27])
}

fn random_alphanumeric(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    // 62 does not divide 256, so this is slightly biased, which is harmless for test codes.
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_secs(100);

    #[test]
    fn adhoc_login_codes_map_to_the_part_before_the_first_dot() {
        assert_eq!(adhoc_login_user("alice.1.x").unwrap(), "alice");
        assert_eq!(adhoc_login_user("bob@x:y-z_").unwrap(), "bob@x:y-z_");
        assert_eq!(adhoc_login_user("a b"), Err(error::INVALID_CODE));
        assert_eq!(adhoc_login_user(""), Err(error::INVALID_CODE));
        assert_eq!(adhoc_login_user(&"x".repeat(129)), Err(error::INVALID_CODE));
        assert!(adhoc_login_user(&"x".repeat(128)).is_ok());
        assert_eq!(adhoc_login_user("invalid.1"), Err(error::INVALID_CODE));
        assert_eq!(adhoc_login_user("risky.1"), Err(error::CODE_BLOCKED));
    }

    #[test]
    fn minted_login_code_expires_and_is_single_use() {
        let mut codes = LoginCodes::new(Duration::from_secs(300));
        let code = codes.mint("carol", NOW);
        assert_eq!(codes.redeem(&code, NOW).unwrap(), "carol");
        assert_eq!(codes.redeem(&code, NOW), Err(error::CODE_USED));

        let late = codes.mint("carol", NOW);
        assert_eq!(
            codes.redeem(&late, NOW + Duration::from_secs(300)),
            Err(error::INVALID_CODE)
        );
    }

    #[test]
    fn adhoc_phone_is_a_stable_mainland_number() {
        let a = adhoc_phone("abc").unwrap();
        assert_eq!(a.phone_number.len(), 11);
        assert!(a.phone_number.starts_with("138"));
        assert_eq!(a.phone_number, a.pure_phone_number);
        assert_eq!(a.country_code, "86");
        assert_eq!(adhoc_phone("abc").unwrap().phone_number, a.phone_number);
        assert_ne!(adhoc_phone("abd").unwrap().phone_number, a.phone_number);
        assert_eq!(adhoc_phone("a@b").unwrap_err(), error::INVALID_CODE);
    }

    #[test]
    fn ids_have_wechat_shape() {
        let o = openid("wxapp", "alice");
        assert_eq!(o.len(), 28);
        assert!(o.starts_with('o'));
        assert_ne!(o, openid("wxother", "alice"));
        assert_eq!(unionid("alice").len(), 28);
    }
}
