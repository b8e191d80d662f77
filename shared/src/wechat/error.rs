//! What a WeChat call can fail with.

/// Errcodes meaning "this access token is no good: refresh and retry once".
pub const TOKEN_REJECTED: [i64; 3] = [40001, 40014, 42001];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WxError {
    #[error("WeChat answered errcode {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },
    /// No connection was made: WeChat never saw the request.
    #[error("WeChat could not be reached: {0}")]
    Unsent(String),
    /// The exchange failed midway (timeout, reset, 5xx): WeChat may have acted on it.
    #[error("WeChat could not be reached: {0}")]
    Transport(String),
    #[error("WeChat answered something unexpected: {0}")]
    BadResponse(String),
}

impl WxError {
    pub fn errcode(&self) -> Option<i64> {
        match self {
            WxError::Api { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }
    pub fn is_token_rejected(&self) -> bool {
        self.errcode().is_some_and(|c| TOKEN_REJECTED.contains(&c))
    }
    /// Busy (-1) and transport failures may go away on their own; nothing else does.
    pub fn is_transient(&self) -> bool {
        matches!(self, WxError::Transport(_) | WxError::Unsent(_)) || self.errcode() == Some(-1)
    }
    /// For calls that spend a single-use code: retry only when WeChat surely did not use it.
    pub fn is_safe_to_resend(&self) -> bool {
        matches!(self, WxError::Unsent(_)) || self.errcode() == Some(-1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errors() {
        let api = |c| WxError::Api {
            errcode: c,
            errmsg: String::new(),
        };
        assert!(api(-1).is_transient());
        assert!(WxError::Transport("x".into()).is_transient());
        assert!(!api(45011).is_transient());
        for c in TOKEN_REJECTED {
            assert!(api(c).is_token_rejected());
        }
        assert!(!api(40029).is_token_rejected());
    }
}
