//! How getting a token can fail.

use std::time::Duration;

use crate::store::StoreError;
use crate::wechat::WxError;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The call made with the token failed (route-specific meaning: a bad page, a used code...).
    #[error(transparent)]
    WeChat(#[from] WxError),
    /// WeChat refused or failed to issue a token; WeChat's own answer.
    #[error("access token fetch failed: {0}")]
    Fetch(WxError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The keeper gave up on its own rules; WeChat said nothing that explains it.
    #[error("no access token: {0}")]
    GaveUp(GiveUp),
}

/// Why the keeper gave up without a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GiveUp {
    #[error("none could be had within {0:?}")]
    Timeout(Duration),
    #[error(
        "WeChat rejected the stable token but still hands it out, and a force refresh was done \
         less than the minimum gap ago"
    )]
    ForceTooSoon,
    #[error(
        "WeChat rejected the stable token but still hands it out, and today's force refreshes \
         are used up"
    )]
    ForceCapReached,
}
