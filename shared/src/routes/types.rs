//! Request field types shared by several routes.

use serde::Deserialize;

/// The rule for a code a WeChat client API hands the mini-program: 1-128 printable ASCII
/// characters. The message names where it comes from, never its value (codes are not logged).
fn client_code(s: String, from: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "code must be the 1-128 printable characters {from} returned"
        ));
    }
    Ok(s)
}

/// A `wx.login` code.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct LoginCode(String);

impl TryFrom<String> for LoginCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        client_code(s, "wx.login").map(LoginCode)
    }
}

impl LoginCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A code from the getPhoneNumber button.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct PhoneCode(String);

impl TryFrom<String> for PhoneCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        client_code(s, "the getPhoneNumber button").map(PhoneCode)
    }
}

impl PhoneCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_rules() {
        assert!(LoginCode::try_from("081abc".to_string()).is_ok());
        for bad in ["", "a b", "中文"] {
            let e = LoginCode::try_from(bad.to_string()).unwrap_err();
            assert!(e.contains("code") && e.contains("wx.login"), "{e}");
        }
        assert!(PhoneCode::try_from("x".repeat(129)).is_err());
    }
}
